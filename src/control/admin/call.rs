//! What a matched admin request carries to its handler: the path's
//! segments, the values the route pattern names, the query.

/// One request as a handler sees it: the decoded path segments, the values
/// of the pattern's `{name}`s, and the raw query.
pub(super) struct Call<'a> {
    pub segments: &'a [String],
    pub params: Vec<(&'static str, &'a str)>,
    pub query: &'a str,
}

impl Call<'_> {
    /// The segment the pattern names `{name}`; empty if it names none.
    pub fn param(&self, name: &str) -> &str {
        self.params
            .iter()
            .find(|(n, _)| *n == name)
            .map_or("", |(_, value)| value)
    }
}

/// Decodes `%XX` escapes; invalid ones stay as they are.
pub(super) fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%')
            .then(|| bytes.get(i + 1..i + 3))
            .flatten()
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match escaped {
            Some(byte) => {
                out.push(byte);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
