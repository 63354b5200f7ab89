//! cargo inspectors end to end: a sparse registry (`config.json`, an index file, one
//! `.crate`) built in a temporary directory, served over HTTPS by a local origin as
//! the replacement of crates.io, fetched by a real `cargo fetch` through the proxy.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{artifact, assert_success, sha256_hex};
use serde_json::json;

const CRATE: &str = "fg-hello";
const VERSION: &str = "0.1.0";

/// The registry's files: `index/` (the sparse index) and `crates/`.
struct Registry {
    root: PathBuf,
}

impl Registry {
    fn build(dir: &Path) -> Registry {
        let registry = Registry {
            root: dir.join("registry"),
        };
        std::fs::create_dir_all(registry.root.join("index/fg/-h")).unwrap();
        std::fs::create_dir_all(registry.root.join("crates")).unwrap();
        registry.write_crate("pub fn hello() -> &'static str { \"hello\" }\n");
        registry.write_index();
        registry
    }

    fn crate_file(&self) -> PathBuf {
        self.root
            .join("crates")
            .join(format!("{CRATE}-{VERSION}.crate"))
    }

    /// Writes the `.crate` with this `src/lib.rs`.
    fn write_crate(&self, lib: &str) {
        let manifest = format!(
            "[package]\nname = \"{CRATE}\"\nversion = \"{VERSION}\"\nedition = \"2021\"\nlicense = \"MIT OR Apache-2.0\"\ndescription = \"says hello\"\nauthors = [\"Jo Tester <jo@example.org>\"]\n"
        );
        let top = format!("{CRATE}-{VERSION}");
        let bytes = fetchgate_formats::testing::tar_gz(&[
            (&format!("{top}/Cargo.toml"), manifest.as_bytes()),
            (&format!("{top}/src/lib.rs"), lib.as_bytes()),
        ]);
        std::fs::write(self.crate_file(), bytes).unwrap();
    }

    /// Writes the index file over the `.crate` as it is now (`config.json` is written
    /// once the origin's URL is known).
    fn write_index(&self) {
        let cksum = sha256_hex(&std::fs::read(self.crate_file()).unwrap());
        let entry = json!({"name": CRATE, "vers": VERSION, "deps": [], "cksum": cksum,
            "features": {}, "yanked": false});
        std::fs::write(
            self.root.join("index/fg/-h").join(CRATE),
            format!("{entry}\n"),
        )
        .unwrap();
    }
}

impl common::Tree for Registry {
    fn root(&self) -> &Path {
        &self.root
    }
}

type Setup = common::Served<Registry>;

async fn setup() -> Setup {
    let s = common::serve_trusted(Registry::build, |base| {
        format!("cargo:\n  registries: [\"sparse+{base}index/\"]\n")
    })
    .await;
    let dl = format!("{}crates/{{crate}}-{{version}}.crate", s.origin.base());
    std::fs::write(
        s.files.root.join("index/config.json"),
        json!({"dl": dl, "api": null}).to_string(),
    )
    .unwrap();
    s
}

impl Setup {
    /// `cargo fetch` of a project depending on the crate, with its own `CARGO_HOME`
    /// whose registry replaces crates.io, through the proxy.
    fn cargo_fetch(&self, session: (&str, &str), name: &str) -> Output {
        let home = self.dir.path().join(format!("cargo-home-{name}"));
        let project = self.dir.path().join(format!("project-{name}"));
        std::fs::create_dir_all(&home).unwrap();
        std::fs::create_dir_all(project.join("src")).unwrap();
        std::fs::write(
            home.join("config.toml"),
            format!(
                "[source.crates-io]\nreplace-with = \"fg\"\n\n[source.fg]\nregistry = \"sparse+{}index/\"\n\n[http]\nmultiplexing = false\n\n[net]\nretry = 0\n",
                self.origin.base()
            ),
        )
        .unwrap();
        std::fs::write(
            project.join("Cargo.toml"),
            format!(
                "[package]\nname = \"consumer\"\nversion = \"0.0.0\"\nedition = \"2021\"\n\n[dependencies]\n{CRATE} = \"{VERSION}\"\n"
            ),
        )
        .unwrap();
        std::fs::write(project.join("src/lib.rs"), "").unwrap();
        Command::new(env!("CARGO"))
            .arg("fetch")
            .current_dir(&project)
            .env("CARGO_HOME", &home)
            .env("CARGO_HTTP_PROXY", self.d.proxy_url(session.0, session.1))
            .env("CARGO_HTTP_CAINFO", self.d.ca_file())
            .env_remove("CARGO_TARGET_DIR")
            .env_remove("CARGO_REGISTRIES_CRATES_IO_PROTOCOL")
            .output()
            .expect("cargo runs")
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn strict_session_approves_a_crate_from_a_trusted_sparse_registry() {
    let s = setup().await;
    let (id, token) = s.d.create(json!({})).await;
    assert_success(&s.cargo_fetch((&id, &token), "ok"), "cargo fetch");

    let report = s.d.report(&id, &token).await;
    assert_eq!(report["denied"], json!([]), "{report:#}");
    let config = artifact(&report, "/index/config.json");
    assert_eq!(config["result"], "Approved", "{config:#}");
    let index = artifact(&report, &format!("/index/fg/-h/{CRATE}"));
    assert_eq!(index["result"], "Approved", "{index:#}");
    assert_eq!(
        index["response-inspection"]["cargo.index"]["annotations"]["versions"],
        "1"
    );

    let krate = artifact(&report, &format!("{CRATE}-{VERSION}.crate"));
    assert_eq!(krate["result"], "Approved", "{krate:#}");
    assert_eq!(
        krate["request-inspection"]["cargo.crate"]["opinion"],
        "Pending"
    );
    let served = std::fs::read(s.files.crate_file()).unwrap();
    let meta = &krate["metadata"];
    assert_eq!(meta["sha256"], sha256_hex(&served));
    assert_eq!(meta["name"], CRATE);
    assert_eq!(meta["version"], VERSION);
    assert_eq!(meta["license"], "MIT OR Apache-2.0");
    assert_eq!(meta["author"], "Jo Tester");
    assert_eq!(meta["description"], "says hello");
    assert_eq!(meta["type"], "application/gzip");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_crate_that_does_not_match_its_index_entry_is_cut_off() {
    let s = setup().await;
    s.files
        .write_crate("pub fn hello() -> &'static str { \"tampered\" }\n");
    let tampered = std::fs::read(s.files.crate_file()).unwrap();
    let (id, token) = s.d.create(json!({})).await;
    let out = s.cargo_fetch((&id, &token), "tampered");
    assert!(!out.status.success(), "cargo accepted a tampered crate");

    let report = s.d.report(&id, &token).await;
    common::assert_cut_off(
        &report,
        &format!("{CRATE}-{VERSION}.crate"),
        &tampered,
        "cargo.crate",
        "does not match the index entry's cksum",
    );
}
