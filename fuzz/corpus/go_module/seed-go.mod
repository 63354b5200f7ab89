module "example.com/m" // c

go 1.21

require example.com/x v1.0.0
