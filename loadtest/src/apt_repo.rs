//! A signed apt repository over the `.deb`s the origin serves (`run --files
//! --trust-files`), so that fetchgate approves them as it would a real archive's: a
//! throwaway OpenPGP key made at start, one `Packages` index listing every `.deb`
//! (package, version and architecture from its Debian file name `name_version_arch.deb`,
//! as `apt-get download` writes it), and a clear-signed `InRelease` listing that index.
//! Every session fetches `InRelease` and `Packages` first, as apt does.

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

/// Package, version and architecture from a Debian file name (`%3a` is the epoch's
/// colon, as `apt-get download` escapes it).
fn deb_fields(name: &str) -> Option<(String, String, String)> {
    let stem = name.strip_suffix(".deb")?;
    let mut parts = stem.split('_');
    let (Some(package), Some(version), Some(arch), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return None;
    };
    if [package, version, arch].iter().any(|p| p.is_empty()) {
        return None;
    }
    let version = version.replace("%3a", ":").replace("%3A", ":");
    Some((package.to_owned(), version, arch.to_owned()))
}

/// The repository listing the `.deb`s among `files` (served at `/files/<name>`); an error
/// names a `.deb` whose file name does not say what it is.
pub fn build(files: &[ServedFile]) -> Result<AptRepo, String> {
    let mut packages = String::new();
    for f in files {
        let Some(name) = f.path.strip_prefix("/files/") else {
            continue;
        };
        if !name.ends_with(".deb") {
            continue;
        }
        let (package, version, arch) = deb_fields(name).ok_or_else(|| {
            format!("{name}: a .deb served as an apt repository must be named package_version_architecture.deb")
        })?;
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

    fn file(name: &str, body: &'static [u8]) -> ServedFile {
        ServedFile::new(format!("/files/{name}"), Bytes::from_static(body))
    }

    #[test]
    fn a_debian_file_name_says_package_version_and_architecture() {
        assert_eq!(
            deb_fields("libllvm14_1%3a14.0.6-12_amd64.deb"),
            Some(("libllvm14".into(), "1:14.0.6-12".into(), "amd64".into()))
        );
        for bad in [
            "x.deb",
            "a_b.deb",
            "a_b_c_d.deb",
            "a__all.deb",
            "a_1_all.whl",
        ] {
            assert_eq!(deb_fields(bad), None, "{bad}");
        }
    }

    #[test]
    fn the_index_lists_every_deb_and_the_signed_release_lists_the_index() {
        let repo = build(&[
            file("hello_1.0-1_all.deb", b"deb one"),
            file("tool_2%3a3.1_amd64.deb", b"deb two"),
            file("x-1.0-py3-none-any.whl", b"wheel"),
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
            "Package: tool\nVersion: 2:3.1\nArchitecture: amd64\nFilename: tool_2%3a3.1_amd64.deb\nSize: 7\nSHA256: {}\n",
            hex::encode(Sha256::digest(b"deb two"))
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
    fn a_deb_not_named_as_debian_names_them_is_refused() {
        let err = build(&[file("hello.deb", b"d")]).unwrap_err();
        assert!(err.contains("hello.deb"), "{err}");
    }
}
