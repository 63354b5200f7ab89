//! A signed apt repository over the `.deb`s the origin serves (`run --files
//! --trust-files`), so that fetchgate approves them as it would a real archive's: a
//! throwaway OpenPGP key made at start, one `Packages` index listing every `.deb`
//! (package, version and architecture from its control file, read with the parser the
//! daemon uses), and a clear-signed `InRelease` listing that index. Every session
//! fetches `InRelease` and `Packages` first, as apt does.

use bytes::Bytes;
use pgp::composed::{
    ArmorOptions, CleartextSignedMessage, KeyType, SecretKeyParamsBuilder, SignedSecretKey,
};
use pgp::types::Password;
use sha2::{Digest, Sha256};

use crate::content::ServedFile;

/// The repository's suite.
pub const SUITE: &str = "loadtest";
/// The repository's base path on the origin; the `.deb`s are at `/files/<name>`.
pub const BASE: &str = "/files";
/// The index, relative to `dists/<suite>/`.
const PACKAGES: &str = "main/binary-amd64/Packages";

/// The repository: its signing key and its index files.
#[derive(Debug, Clone)]
pub struct AptRepo {
    /// The public key `InRelease` is signed with, ASCII-armored (what sessions trust).
    pub key: String,
    /// `InRelease`, then `Packages`: the order a session fetches them in.
    pub files: Vec<ServedFile>,
}

/// The repository listing the `.deb`s among `files` (served at `/files/<name>`); an error
/// names a `.deb` whose control file cannot be read.
pub fn build(files: &[ServedFile]) -> Result<AptRepo, String> {
    let mut packages = String::new();
    for f in files {
        let Some(name) = f.path.strip_prefix("/files/") else {
            continue;
        };
        if !name.ends_with(".deb") {
            continue;
        }
        let control = fetchgate_formats::deb::control_of(&f.bytes)
            .map_err(|e| format!("{name}: not a Debian package: {e}"))?;
        let field = |key: &str| {
            control
                .get(key)
                .filter(|v| !v.is_empty())
                .ok_or_else(|| format!("{name}: its control file has no {key}"))
        };
        let (package, version, arch) =
            (field("Package")?, field("Version")?, field("Architecture")?);
        packages.push_str(&format!(
            "Package: {package}\nVersion: {version}\nArchitecture: {arch}\nFilename: {name}\nSize: {}\nSHA256: {}\n\n",
            f.bytes.len(),
            hex::encode(f.sha256)
        ));
    }
    let release = format!(
        "Origin: fetchgate-loadtest\nSuite: {SUITE}\nCodename: {SUITE}\nComponents: main\nArchitectures: amd64\nSHA256:\n {} {} {PACKAGES}\n",
        hex::encode(Sha256::digest(&packages)),
        packages.len()
    );
    let (key, in_release) =
        sign(&release).map_err(|e| format!("signing the test repository: {e}"))?;
    let dists = format!("{BASE}/dists/{SUITE}");
    Ok(AptRepo {
        key,
        files: vec![
            ServedFile::new(format!("{dists}/InRelease"), Bytes::from(in_release)),
            ServedFile::new(format!("{dists}/{PACKAGES}"), Bytes::from(packages)),
        ],
    })
}

/// A new key's armored public half, and `text` clear-signed with it.
fn sign(text: &str) -> Result<(String, String), pgp::errors::Error> {
    let mut rng = rand08::thread_rng();
    let params = SecretKeyParamsBuilder::default()
        .key_type(KeyType::Ed25519Legacy)
        .can_certify(true)
        .can_sign(true)
        .primary_user_id("fetchgate-loadtest <loadtest@localhost>".into())
        .passphrase(None)
        .build()
        .map_err(|e| pgp::errors::Error::Message {
            message: e.to_string(),
            backtrace: None,
        })?;
    let key: SignedSecretKey = params.generate(&mut rng)?;
    let signed = CleartextSignedMessage::sign(&mut rng, text, &*key, &Password::empty())?;
    Ok((
        key.to_public_key()
            .to_armored_string(ArmorOptions::default())?,
        signed.to_armored_string(ArmorOptions::default())?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use pgp::composed::{Deserializable, SignedPublicKey};

    fn file(name: &str, body: Vec<u8>) -> ServedFile {
        ServedFile::new(format!("/files/{name}"), Bytes::from(body))
    }

    fn deb(package: &str, version: &str, arch: &str) -> Vec<u8> {
        fetchgate_formats::testing::deb(
            &format!("Package: {package}\nVersion: {version}\nArchitecture: {arch}\n"),
            b"data",
        )
    }

    #[test]
    fn the_index_lists_every_deb_and_the_signed_release_lists_the_index() {
        let tool = deb("tool", "2:3.1", "amd64");
        let repo = build(&[
            file("hello_1.0-1_all.deb", deb("hello", "1.0-1", "all")),
            // Debian's pool names leave the epoch out.
            file("tool_3.1_amd64.deb", tool.clone()),
            file("x-1.0-py3-none-any.whl", b"wheel".to_vec()),
        ])
        .unwrap();
        let paths: Vec<_> = repo.files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "/files/dists/loadtest/InRelease",
                "/files/dists/loadtest/main/binary-amd64/Packages"
            ]
        );
        let packages = std::str::from_utf8(&repo.files[1].bytes).unwrap();
        assert!(packages.contains(&format!(
            "Package: tool\nVersion: 2:3.1\nArchitecture: amd64\nFilename: tool_3.1_amd64.deb\nSize: {}\nSHA256: {}\n",
            tool.len(),
            hex::encode(Sha256::digest(&tool))
        )));
        assert_eq!(packages.matches("Package: ").count(), 2, "{packages}");
        let in_release = std::str::from_utf8(&repo.files[0].bytes).unwrap();
        assert!(in_release.starts_with("-----BEGIN PGP SIGNED MESSAGE-----"));
        assert!(in_release.contains(&format!(
            " {} {} main/binary-amd64/Packages",
            hex::encode(repo.files[1].sha256),
            repo.files[1].bytes.len()
        )));
        assert!(repo.key.starts_with("-----BEGIN PGP PUBLIC KEY BLOCK-----"));
        let (signed, _) = CleartextSignedMessage::from_string(in_release).unwrap();
        let (public, _) = SignedPublicKey::from_string(&repo.key).unwrap();
        signed.verify(&public).unwrap();
    }

    #[test]
    fn a_deb_whose_control_file_cannot_be_read_is_refused_by_name() {
        let err = build(&[file("hello.deb", b"not a package".to_vec())]).unwrap_err();
        assert!(err.contains("hello.deb: not a Debian package"), "{err}");
        let nameless = deb("", "1", "all");
        let err = build(&[file("x.deb", nameless)]).unwrap_err();
        assert!(
            err.contains("x.deb: its control file has no Package"),
            "{err}"
        );
    }
}
