//! The dashboard: one page, its script and its style, embedded in the binary
//! and served on the admin listener without a token. The page holds nothing
//! secret; it asks the operator for the token and sends it with every API call.

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::Full;

const INDEX_HTML: &str = include_str!("../../../assets/dashboard/index.html");
const APP_JS: &str = include_str!("../../../assets/dashboard/app.js");
const APP_CSS: &str = include_str!("../../../assets/dashboard/app.css");

/// Only the page's own script, style and API calls; no inline code, no frames.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'";

/// The dashboard file at this request path (split into segments), if any:
/// `/`, `/assets/app.js` or `/assets/app.css`.
pub fn asset(segments: &[&str]) -> Option<Response<Full<Bytes>>> {
    let (body, content_type) = match segments {
        [] => (INDEX_HTML, "text/html; charset=utf-8"),
        ["assets", "app.js"] => (APP_JS, "text/javascript; charset=utf-8"),
        ["assets", "app.css"] => (APP_CSS, "text/css; charset=utf-8"),
        _ => return None,
    };
    let mut resp = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *resp.status_mut() = StatusCode::OK;
    let headers = resp.headers_mut();
    let fixed: [(HeaderName, &'static str); 5] = [
        (header::CONTENT_TYPE, content_type),
        (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::CACHE_CONTROL, "no-cache"),
    ];
    for (name, value) in fixed {
        headers.insert(name, HeaderValue::from_static(value));
    }
    Some(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_script_and_style_are_served_with_the_policy() {
        for (segments, content_type) in [
            (&[][..], "text/html; charset=utf-8"),
            (&["assets", "app.js"][..], "text/javascript; charset=utf-8"),
            (&["assets", "app.css"][..], "text/css; charset=utf-8"),
        ] {
            let resp = asset(segments).unwrap();
            assert_eq!(resp.status(), StatusCode::OK);
            let headers = resp.headers();
            assert_eq!(headers[header::CONTENT_TYPE], content_type);
            assert_eq!(
                headers[header::CONTENT_SECURITY_POLICY],
                CONTENT_SECURITY_POLICY
            );
            assert_eq!(headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
            assert_eq!(headers[header::REFERRER_POLICY], "no-referrer");
            assert_eq!(headers[header::CACHE_CONTROL], "no-cache");
        }
    }

    #[test]
    fn other_paths_are_not_dashboard_files() {
        assert!(asset(&["assets", "app.map"]).is_none());
        assert!(asset(&["assets"]).is_none());
        assert!(asset(&["index.html"]).is_none());
        assert!(asset(&["api", "v1", "routes"]).is_none());
    }

    /// The policy refuses inline code and style: the page must not need them.
    #[test]
    fn page_has_no_inline_script_style_or_handlers() {
        let html = INDEX_HTML.to_ascii_lowercase();
        assert!(html.contains(r#"<script src="/assets/app.js" defer></script>"#));
        assert!(html.contains(r#"<link rel="stylesheet" href="/assets/app.css">"#));
        assert_eq!(html.matches("<script").count(), 1, "one script, by src");
        assert!(!html.contains("<style"), "no inline <style>");
        assert!(!html.contains(" style="), "no style attributes");
        assert!(!html.contains("javascript:"), "no javascript: URLs");
        for tag in html.split('<').skip(1) {
            let tag = tag.split('>').next().unwrap_or_default();
            assert!(
                !tag.split_whitespace()
                    .any(|attr| attr.starts_with("on") && attr.contains('=')),
                "inline event handler in <{tag}>"
            );
        }
    }

    #[test]
    fn script_uses_no_eval_or_inline_style() {
        for banned in ["eval(", "new Function", "innerHTML", "setAttribute('style'"] {
            assert!(!APP_JS.contains(banned), "app.js uses {banned}");
        }
    }
}
