//! The query protocol's inputs and outputs: decoding `Name.member.N`-style forms and
//! writing escaped XML results.
//!
//! Query-protocol SDKs flatten every input into form pairs: scalars as `Name=value`,
//! lists as `Name.member.N` (1-based), maps as `Name.entry.N.key` / `Name.entry.N.value`
//! and lists of structures as `Name.member.N.Field`. [`QueryInput`] reads them back
//! into values in the list's order.

use std::collections::BTreeMap;
use std::str::FromStr;

use crate::error::AwsError;

/// Why a query-protocol input could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    /// A required parameter is absent.
    #[error("The request must contain the parameter {0}")]
    MissingParameter(String),
    /// A parameter's value does not parse as its type.
    #[error("Invalid value '{value}' for parameter {name}")]
    InvalidValue {
        /// The parameter's full name.
        name: String,
        /// The value sent.
        value: String,
    },
    /// A list or map index is not a positive integer.
    #[error("Invalid index in parameter {0}: indexes start at 1")]
    InvalidIndex(String),
    /// A map entry has a key without a value or a value without a key.
    #[error("Map entry {0} must have both a key and a value")]
    IncompleteMapEntry(String),
}

impl From<QueryError> for AwsError {
    fn from(err: QueryError) -> Self {
        let code = match err {
            QueryError::MissingParameter(_) => "MissingParameter",
            _ => "ValidationError",
        };
        AwsError::client(code, err.to_string())
    }
}

/// Pairs grouped by their 1-based list index: `(rest of the name, value)`.
type IndexedGroups<'a> = BTreeMap<u32, Vec<(&'a str, &'a str)>>;

/// The form pairs of one query-protocol call (or of one structure inside it).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueryInput {
    pairs: Vec<(String, String)>,
}

impl From<Vec<(String, String)>> for QueryInput {
    fn from(pairs: Vec<(String, String)>) -> Self {
        Self { pairs }
    }
}

/// Parses an `application/x-www-form-urlencoded` body or query string into pairs.
pub fn parse_form(body: &[u8]) -> Vec<(String, String)> {
    form_urlencoded::parse(body).into_owned().collect()
}

impl QueryInput {
    /// The pairs, in the order they were sent.
    pub fn pairs(&self) -> &[(String, String)] {
        &self.pairs
    }

    /// The value of a scalar parameter (the first, if sent twice).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The value of a scalar parameter that must be present.
    pub fn required(&self, name: &str) -> Result<&str, QueryError> {
        self.get(name)
            .ok_or_else(|| QueryError::MissingParameter(name.to_string()))
    }

    /// A scalar parameter parsed as `T` (integers, booleans, …), if present.
    pub fn parse<T: FromStr>(&self, name: &str) -> Result<Option<T>, QueryError> {
        match self.get(name) {
            None => Ok(None),
            Some(v) => v.parse().map(Some).map_err(|_| QueryError::InvalidValue {
                name: name.to_string(),
                value: v.to_string(),
            }),
        }
    }

    /// Pairs under `prefix.`, grouped by the 1-based index that follows it and sorted by
    /// that index; each group holds `(rest, value)` where `rest` is what follows the
    /// index (`""` for a scalar member, `"Id"` for `Name.member.1.Id`).
    fn indexed(&self, prefix: &str) -> Result<IndexedGroups<'_>, QueryError> {
        let mut groups: IndexedGroups<'_> = BTreeMap::new();
        for (k, v) in &self.pairs {
            let Some(rest) = k.strip_prefix(prefix).and_then(|r| r.strip_prefix('.')) else {
                continue;
            };
            let (index, tail) = match rest.split_once('.') {
                Some((i, t)) => (i, t),
                None => (rest, ""),
            };
            let n: u32 = index
                .parse()
                .ok()
                .filter(|n| *n >= 1 && !index.starts_with('+'))
                .ok_or_else(|| QueryError::InvalidIndex(k.clone()))?;
            groups.entry(n).or_default().push((tail, v.as_str()));
        }
        Ok(groups)
    }

    /// A list of scalars sent as `Name.member.N`, in index order.
    pub fn list(&self, name: &str) -> Result<Vec<String>, QueryError> {
        let groups = self.indexed(&format!("{name}.member"))?;
        Ok(groups
            .into_values()
            .filter_map(|g| {
                g.iter()
                    .find(|(t, _)| t.is_empty())
                    .map(|(_, v)| v.to_string())
            })
            .collect())
    }

    /// A map sent as `Name.entry.N.key` / `Name.entry.N.value`, in index order.
    pub fn map(&self, name: &str) -> Result<Vec<(String, String)>, QueryError> {
        let groups = self.indexed(&format!("{name}.entry"))?;
        let mut out = Vec::with_capacity(groups.len());
        for (n, group) in groups {
            let key = group.iter().find(|(t, _)| *t == "key").map(|(_, v)| *v);
            let value = group.iter().find(|(t, _)| *t == "value").map(|(_, v)| *v);
            match (key, value) {
                (Some(k), Some(v)) => out.push((k.to_string(), v.to_string())),
                _ => return Err(QueryError::IncompleteMapEntry(format!("{name}.entry.{n}"))),
            }
        }
        Ok(out)
    }

    /// A list of structures sent as `Name.member.N.Field`, in index order; each element
    /// is a `QueryInput` of its own fields (`Field=value`), so nested lists work too.
    pub fn struct_list(&self, name: &str) -> Result<Vec<QueryInput>, QueryError> {
        let groups = self.indexed(&format!("{name}.member"))?;
        Ok(groups
            .into_values()
            .map(|g| QueryInput {
                pairs: g
                    .into_iter()
                    .filter(|(t, _)| !t.is_empty())
                    .map(|(t, v)| (t.to_string(), v.to_string()))
                    .collect(),
            })
            .collect())
    }

    /// The fields of a nested structure sent as `Name.Field`.
    pub fn structure(&self, name: &str) -> QueryInput {
        QueryInput {
            pairs: self
                .pairs
                .iter()
                .filter_map(|(k, v)| {
                    k.strip_prefix(name)
                        .and_then(|r| r.strip_prefix('.'))
                        .map(|r| (r.to_string(), v.clone()))
                })
                .collect(),
        }
    }
}

/// Escapes text for an XML element or attribute. Characters XML 1.0 cannot carry at
/// all (most C0 controls) become U+FFFD, since no escape exists for them.
pub fn escape_xml(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // Carriage returns would be normalised away by parsers; the reference keeps them.
            '\r' => out.push_str("&#xD;"),
            '\t' | '\n' => out.push(c),
            c if (c as u32) < 0x20 || c == '\u{FFFE}' || c == '\u{FFFF}' => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

/// Builds the XML of a query-protocol result. Element names come from code, not from
/// requests; text is always escaped.
#[derive(Debug, Default, Clone)]
pub struct XmlWriter {
    buf: String,
}

impl XmlWriter {
    /// An empty document fragment.
    pub fn new() -> Self {
        Self::default()
    }

    /// Opens `<name>`.
    pub fn start(&mut self, name: &str) -> &mut Self {
        self.buf.push('<');
        self.buf.push_str(name);
        self.buf.push('>');
        self
    }

    /// Closes `</name>`.
    pub fn end(&mut self, name: &str) -> &mut Self {
        self.buf.push_str("</");
        self.buf.push_str(name);
        self.buf.push('>');
        self
    }

    /// Writes `<name>text</name>` with the text escaped.
    pub fn element(&mut self, name: &str, text: &str) -> &mut Self {
        self.start(name);
        self.buf.push_str(&escape_xml(text));
        self.end(name)
    }

    /// Writes the element only when there is a value.
    pub fn optional(&mut self, name: &str, text: Option<&str>) -> &mut Self {
        if let Some(t) = text {
            self.element(name, t);
        }
        self
    }

    /// Writes `<name>` holding one `<member>` per item, each written by `write`.
    pub fn members<T>(
        &mut self,
        name: &str,
        items: impl IntoIterator<Item = T>,
        mut write: impl FnMut(&mut Self, T),
    ) -> &mut Self {
        self.start(name);
        for item in items {
            self.start("member");
            write(self, item);
            self.end("member");
        }
        self.end(name)
    }

    /// Writes `<name>` holding one `<member>text</member>` per string.
    pub fn string_members<'a>(
        &mut self,
        name: &str,
        items: impl IntoIterator<Item = &'a str>,
    ) -> &mut Self {
        self.members(name, items, |w, s| {
            w.buf.push_str(&escape_xml(s));
        })
    }

    /// Appends already-built XML.
    pub fn raw(&mut self, xml: &str) -> &mut Self {
        self.buf.push_str(xml);
        self
    }

    /// The XML written so far.
    pub fn finish(self) -> String {
        self.buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn input(pairs: &[(&str, &str)]) -> QueryInput {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<Vec<_>>()
            .into()
    }

    #[test]
    fn scalars() {
        let q = input(&[("Name", "tg"), ("Port", "80"), ("Enabled", "true")]);
        assert_eq!(q.get("Name"), Some("tg"));
        assert_eq!(q.parse::<u16>("Port").unwrap(), Some(80));
        assert_eq!(q.parse::<bool>("Enabled").unwrap(), Some(true));
        assert_eq!(q.parse::<u16>("Missing").unwrap(), None);
        assert!(matches!(
            q.parse::<u16>("Name"),
            Err(QueryError::InvalidValue { .. })
        ));
        assert_eq!(
            q.required("Other"),
            Err(QueryError::MissingParameter("Other".into()))
        );
        let e: AwsError = QueryError::MissingParameter("X".into()).into();
        assert_eq!(e.code, "MissingParameter");
    }

    #[test]
    fn list_is_ordered_by_index_not_arrival() {
        let q = input(&[
            ("Names.member.10", "j"),
            ("Names.member.2", "b"),
            ("Names.member.1", "a"),
            ("NamesOther.member.1", "x"),
        ]);
        assert_eq!(q.list("Names").unwrap(), vec!["a", "b", "j"]);
        assert!(q.list("Absent").unwrap().is_empty());
        let bad = input(&[("Names.member.0", "a")]);
        assert!(matches!(
            bad.list("Names"),
            Err(QueryError::InvalidIndex(_))
        ));
        let bad = input(&[("Names.member.x", "a")]);
        assert!(bad.list("Names").is_err());
    }

    #[test]
    fn maps() {
        let q = input(&[
            ("Attributes.entry.2.key", "b"),
            ("Attributes.entry.1.value", "1"),
            ("Attributes.entry.1.key", "a"),
            ("Attributes.entry.2.value", "2"),
        ]);
        assert_eq!(
            q.map("Attributes").unwrap(),
            vec![("a".into(), "1".into()), ("b".into(), "2".into())]
        );
        let bad = input(&[("Attributes.entry.1.key", "a")]);
        assert!(matches!(
            bad.map("Attributes"),
            Err(QueryError::IncompleteMapEntry(_))
        ));
    }

    #[test]
    fn struct_lists_and_nesting() {
        let q = input(&[
            ("TargetGroupArn", "arn"),
            ("Targets.member.2.Id", "i-2"),
            ("Targets.member.1.Id", "i-1"),
            ("Targets.member.1.Port", "8080"),
            ("Targets.member.2.Tags.member.1.Key", "k"),
        ]);
        let targets = q.struct_list("Targets").unwrap();
        assert_eq!(targets.len(), 2);
        assert_eq!(targets[0].get("Id"), Some("i-1"));
        assert_eq!(targets[0].parse::<u16>("Port").unwrap(), Some(8080));
        assert_eq!(targets[1].get("Port"), None);
        let tags = targets[1].struct_list("Tags").unwrap();
        assert_eq!(tags[0].get("Key"), Some("k"));
        let s = input(&[("Matcher.HttpCode", "200")]).structure("Matcher");
        assert_eq!(s.get("HttpCode"), Some("200"));
    }

    #[test]
    fn form_parsing_decodes() {
        let pairs = parse_form(b"Action=DescribeTargetHealth&Name=a%20b+c&Empty=");
        assert_eq!(pairs[1], ("Name".into(), "a b c".into()));
        assert_eq!(pairs[2], ("Empty".into(), String::new()));
    }

    #[test]
    fn xml_writer() {
        let mut w = XmlWriter::new();
        w.start("TargetGroups")
            .element("Name", "a<b & \"c\"")
            .optional("None", None)
            .string_members("Arns", ["x", "y>"])
            .end("TargetGroups");
        assert_eq!(
            w.finish(),
            "<TargetGroups><Name>a&lt;b &amp; &quot;c&quot;</Name><Arns><member>x</member><member>y&gt;</member></Arns></TargetGroups>"
        );
        assert_eq!(escape_xml("a\u{0}b\rc"), "a\u{FFFD}b&#xD;c");
    }

    fn unescape(s: &str) -> String {
        s.replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&quot;", "\"")
            .replace("&apos;", "'")
            .replace("&#xD;", "\r")
            .replace("&amp;", "&")
    }

    proptest! {
        #[test]
        fn escaped_text_has_no_markup(s in "\\PC{0,100}") {
            let e = escape_xml(&s);
            prop_assert!(!e.contains('<') && !e.contains('>'));
            // Every `&` starts an entity this module writes.
            for (i, _) in e.match_indices('&') {
                let rest = &e[i..];
                prop_assert!(["&amp;", "&lt;", "&gt;", "&quot;", "&apos;", "&#xD;"].iter().any(|p| rest.starts_with(p)));
            }
        }

        #[test]
        fn escape_round_trips_printable_text(s in "[ -~\\n\\t\\r]{0,100}") {
            prop_assert_eq!(unescape(&escape_xml(&s)), s);
        }

        #[test]
        fn list_order_follows_indexes(mut items in prop::collection::vec("[a-z]{0,5}", 0..20), seed in any::<u64>()) {
            let mut pairs: Vec<(String, String)> = items
                .iter()
                .enumerate()
                .map(|(i, v)| (format!("L.member.{}", i + 1), v.clone()))
                .collect();
            // Shuffle deterministically from the seed.
            let n = pairs.len();
            if n > 1 {
                let mut s = seed;
                for i in (1..n).rev() {
                    s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    pairs.swap(i, (s >> 33) as usize % (i + 1));
                }
            }
            let q = QueryInput::from(pairs);
            prop_assert_eq!(q.list("L").unwrap(), std::mem::take(&mut items));
        }

        #[test]
        fn readers_never_panic(pairs in prop::collection::vec(("[A-Za-z0-9.+-]{0,20}", "\\PC{0,10}"), 0..20), name in "[A-Za-z.]{0,8}") {
            let q = QueryInput::from(pairs);
            let _ = q.list(&name);
            let _ = q.map(&name);
            let _ = q.struct_list(&name);
            let _ = q.structure(&name);
            let _ = q.parse::<i64>(&name);
        }

        #[test]
        fn form_parsing_never_panics(body in prop::collection::vec(any::<u8>(), 0..200)) {
            let _ = parse_form(&body);
        }
    }
}
