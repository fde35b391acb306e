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

/// `value` parsed as a structured-field List of String items with Integer parameters.
pub fn sf_list(value: &str) -> Vec<Member> {
    let list: Vec<ListEntry> = Parser::new(value)
        .parse_list()
        .unwrap_or_else(|e| panic!("{value:?} is not a structured-field list: {e}"));
    list.into_iter()
        .map(|entry| {
            let ListEntry::Item(item) = entry else {
                panic!("{value:?} has an inner list");
            };
            let BareItem::String(name) = item.bare_item else {
                panic!("{value:?}: an item is not a String");
            };
            let params = item
                .params
                .into_iter()
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
