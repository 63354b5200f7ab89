//! Python packaging formats: a simple index's project page, core metadata, and the two
//! kinds of distribution (wheels and sdists), each read in bounded memory.

pub mod index;
pub mod metadata;
pub mod sdist;
pub mod wheel;
