//! Structured-field lists (RFC 8941) as a client reads them, with the `sfv` parser: the IETF
//! `RateLimit-Policy` and `RateLimit` fields.

use sfv::{BareItem, ListEntry, Parser};

/// One item of a structured-field list: its string value and its integer parameters.
#[derive(Debug, PartialEq)]
pub struct Member {
    pub name: String,
    pub params: Vec<(String, i64)>,
}

impl Member {
    pub fn param(&self, key: &str) -> i64 {
        self.params
            .iter()
            .find(|(k, _)| k == key)
            .unwrap_or_else(|| panic!("{self:?} has no `{key}`"))
            .1
    }
}

/// The items of the structured-field List `value`.
fn items(value: &str) -> Vec<sfv::Item> {
    let list: Vec<ListEntry> = Parser::new(value)
        .parse_list()
        .unwrap_or_else(|e| panic!("{value:?} is not a structured-field list: {e}"));
    list.into_iter()
        .map(|entry| match entry {
            ListEntry::Item(item) => item,
            ListEntry::InnerList(_) => panic!("{value:?} has an inner list"),
        })
        .collect()
}

/// `value` parsed as a structured-field List of String items with Integer parameters.
pub fn sf_list(value: &str) -> Vec<Member> {
    items(value)
        .into_iter()
        .map(|item| {
            let BareItem::String(name) = item.bare_item else {
                panic!("{value:?}: an item is not a String");
            };
            let params = item
                .params
                .into_iter()
                // Byte Sequences (the partition key) are read with `sf_bytes`.
                .filter(|(_, value)| !matches!(value, BareItem::ByteSequence(_)))
                .map(|(key, value)| {
                    let BareItem::Integer(n) = value else {
                        panic!("{value:?}: parameter {key:?} is not an Integer");
                    };
                    (key.as_str().to_owned(), i64::from(n))
                })
                .collect();
            Member {
                name: name.as_str().to_owned(),
                params,
            }
        })
        .collect()
}

/// The Byte Sequence parameter `key` of each item of the structured-field list `value`.
pub fn sf_bytes(value: &str, key: &str) -> Vec<Option<Vec<u8>>> {
    items(value)
        .into_iter()
        .map(|item| {
            item.params
                .into_iter()
                .find_map(|(name, param)| match param {
                    BareItem::ByteSequence(bytes) if name.as_str() == key => Some(bytes),
                    _ if name.as_str() == key => {
                        panic!("{value:?}: `{key}` is not a Byte Sequence")
                    }
                    _ => None,
                })
        })
        .collect()
}
