//! `deb`: a Debian binary package must be listed, by sha256 and size, in a Packages
//! index the session verified; its metadata comes from the `control` file inside
//! `control.tar.{gz,xz,zst}`, read while the package streams (the ar push parser,
//! `fetchgate_formats::deb`), and its license from the copyright scan of its data
//! member.

use std::collections::BTreeMap;
use std::sync::Arc;

use fetchgate_storage::BodyDigest;

use super::copyright::{CopyrightScan, Scanned};
use super::verified::{Remembered, Verified};
use super::{
    BodyObserver, Inspector, RequestFinding, RequestInfo, ResponseFinding, SessionInspection,
};
use fetchgate_formats::copyright::Copyright;
use fetchgate_formats::deb::ArReader;

pub const ID: &str = "deb";

/// The MIME type of a Debian binary package.
pub const MIME: &str = "application/vnd.debian.binary-package";

/// Report metadata from control fields.
fn metadata(control: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    let get = |k: &str| {
        control
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(k))
            .map(|(_, v)| v.as_str())
    };
    let mut m = BTreeMap::new();
    m.insert("type".to_owned(), MIME.to_owned());
    for (key, field) in [
        ("name", "Package"),
        ("version", "Version"),
        ("architecture", "Architecture"),
    ] {
        if let Some(v) = get(field) {
            m.insert(key.to_owned(), v.to_owned());
        }
    }
    if let Some(d) = get("Description").and_then(|d| d.lines().next()) {
        m.insert("description".into(), d.trim().to_owned());
    }
    if let Some(maint) = get("Maintainer") {
        match maint.split_once('<') {
            Some((name, rest)) => {
                m.insert("author".into(), name.trim().to_owned());
                if let Some(email) = rest.split('>').next() {
                    m.insert("author-email".into(), email.trim().to_owned());
                }
            }
            None => {
                m.insert("author".into(), maint.trim().to_owned());
            }
        }
    }
    let source = get("Source")
        .or(get("Package"))
        .map(|s| s.split(' ').next().unwrap_or(s));
    if let Some(s) = source {
        m.insert("source-package".into(), s.to_owned());
    }
    m.retain(|_, v| !v.is_empty());
    m
}

/// `deb`, remembering the licenses of the packages it scanned whole.
pub struct DebInspector {
    licenses: Arc<Verified<Option<Copyright>>>,
}

impl DebInspector {
    /// Remembers the license of up to `verified_cache` packages, by URL.
    pub fn new(verified_cache: usize) -> Self {
        DebInspector {
            licenses: Arc::new(Verified::new("deb", verified_cache)),
        }
    }
}

impl Inspector for DebInspector {
    fn id(&self) -> &'static str {
        ID
    }

    fn request(&self, req: &RequestInfo<'_>, session: &Arc<SessionInspection>) -> RequestFinding {
        if !super::apt::is_trusted_deb(session, req) {
            return RequestFinding::unknown();
        }
        let license = match self.licenses.get(req.url, None) {
            Some(known) => License::Remembered(known),
            None => License::Scan(CopyrightScan::default()),
        };
        RequestFinding::pending(Box::new(DebObserver {
            session: Arc::clone(session),
            ar: ArReader::default(),
            url: req.url.to_owned(),
            license,
            licenses: Arc::clone(&self.licenses),
        }))
    }
}

/// Where a package's license comes from.
enum License {
    /// Its data member, scanned while it streams.
    Scan(CopyrightScan),
    /// An earlier download by the same URL, scanned whole: the license applies if the
    /// package is still the same bytes.
    Remembered(Remembered<Option<Copyright>>),
}

struct DebObserver {
    session: Arc<SessionInspection>,
    ar: ArReader,
    url: String,
    license: License,
    licenses: Arc<Verified<Option<Copyright>>>,
}

impl DebObserver {
    /// The license of the approved package `body`, remembered by its URL once its data
    /// member was scanned to the end.
    fn license(self, body: &BodyDigest) -> Option<Copyright> {
        match self.license {
            License::Scan(scan) => match scan.finish() {
                Scanned::Read(found) => {
                    let bytes = found.as_ref().map_or(0, |c| {
                        c.license.len() + c.holders.as_ref().map_or(0, String::len)
                    });
                    self.licenses
                        .insert(&self.url, body.sha256, found.clone(), bytes);
                    found
                }
                Scanned::GaveUp => None,
            },
            License::Remembered(known) if known.sha256 == body.sha256 => {
                known.verdict.as_ref().clone()
            }
            License::Remembered(_) => {
                // Another package under this URL now: scan the next download again.
                self.licenses.forget(&self.url);
                None
            }
        }
    }
}

impl BodyObserver for DebObserver {
    fn chunk(&mut self, bytes: &[u8]) {
        match &mut self.license {
            License::Scan(scan) => self
                .ar
                .feed(bytes, &mut |member, data| scan.feed(member, data)),
            License::Remembered(_) => self.ar.feed(bytes, &mut |_, _| {}),
        }
    }

    fn finish(self: Box<Self>, body: &BodyDigest) -> ResponseFinding {
        let control = match self.ar.control() {
            Ok(c) => c,
            Err(e) => return ResponseFinding::rejected(format!("not a valid Debian package: {e}")),
        };
        let entry = {
            let memory = self.session.apt.lock().unwrap_or_else(|p| p.into_inner());
            memory.package(&body.sha256).cloned()
        };
        let Some(entry) = entry else {
            return ResponseFinding::rejected(format!(
                "sha256 {} is not listed in any Packages index verified in this session",
                hex::encode(body.sha256)
            ));
        };
        if entry.size != body.size {
            return ResponseFinding::rejected(format!(
                "size {} differs from the Packages index's {}",
                body.size, entry.size
            ));
        }
        let mut meta = metadata(&control);
        for (key, listed) in [
            ("name", &entry.name),
            ("version", &entry.version),
            ("architecture", &entry.architecture),
        ] {
            if meta.get(key) != Some(listed) {
                return ResponseFinding::rejected(format!(
                    "control file {key} {:?} differs from the Packages index's {listed:?}",
                    meta.get(key).map_or("", String::as_str)
                ));
            }
        }
        meta.insert("apt-suite".into(), entry.listing.suite.clone());
        if let Some(vendor) = &entry.listing.vendor {
            meta.insert("vendor".into(), vendor.clone());
        }
        if let Some(c) = self.license(body) {
            meta.insert("license".into(), c.license);
            if let Some(holders) = c.holders {
                meta.insert("copyright".into(), holders);
            }
        }
        let mut finding = ResponseFinding::approved()
            .note("listed-in", format!("{} Packages", entry.listing.suite));
        finding.metadata = meta;
        finding
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fetchgate_formats::deb::control_of;
    use fetchgate_formats::testing::deb;

    #[test]
    fn report_metadata_comes_from_the_control_file() {
        let pkg = deb(
            "Package: hello\nVersion: 1.0\nArchitecture: all\nMaintainer: Jo Doe <jo@example.org>\nDescription: says hi\n more\n",
            &[0u8; 1025],
        );
        let meta = metadata(&control_of(&pkg).unwrap());
        assert_eq!(meta["name"], "hello");
        assert_eq!(meta["author"], "Jo Doe");
        assert_eq!(meta["author-email"], "jo@example.org");
        assert_eq!(meta["description"], "says hi");
        assert_eq!(meta["source-package"], "hello");
    }
}
