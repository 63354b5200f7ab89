//! Fuzz target: the debtags of a Packages file (its `Tag` fields) and an overrides file.
//! Beyond not panicking, the `package: tags` text form must keep one line per package.
#![no_main]

use libfuzzer_sys::fuzz_target;

use fetchgate_formats::deb822::{Item, Paragraphs};
use fetchgate_formats::debtags::{TagMap, apply, normalise, parse_overrides, stanza_tags, to_text};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let tags = normalise(&text);
    assert!(
        !tags.contains(|c: char| c.is_whitespace() && c != ' '),
        "{tags:?}"
    );
    let mut map = TagMap::new();
    let mut paragraphs = Paragraphs::new(data);
    while let Ok(Some(item)) = paragraphs.next_item() {
        if let Item::Stanza(s) = item {
            map.extend(stanza_tags(s));
        }
    }
    let (overrides, _bad) = parse_overrides(&text);
    apply(&mut map, &overrides);
    assert_eq!(to_text(&map).lines().count(), map.len(), "{map:?}");
});
