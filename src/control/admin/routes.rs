//! The admin listener's route table: method and path pattern → handler, and
//! the lookup that tells an unknown path (404) from a known path asked with
//! the wrong method (405, with the methods it takes for `Allow`).

use http::Method;

use super::Admin;
use super::call::{Call, percent_decode};
use super::handlers::{self, Reply};

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Access {
    /// Probes and the dashboard page: answered without a token (a wrong
    /// one is still refused, as everywhere).
    Open,
    /// Needs a token: role read for GETs (none on a loopback listener),
    /// operate for the rest.
    Token,
    /// Needs a token of role admin (reload).
    Admin,
}

/// What a handler gets besides the shared [`Admin`].
pub(super) enum Handler {
    /// Answers from the path and the query.
    Plain(fn(&Admin, &Call) -> Reply),
    /// Reads the body and asks for a weight change, which the dispatcher
    /// applies (through the fleet in fleet mode) and answers with the route.
    Change(fn(&Admin, &Call, &[u8]) -> handlers::Asked),
    /// Asks for a canary action, which the dispatcher hands to the controller.
    Canary(fn(&Admin, &Call) -> handlers::AskedAction),
}

pub(super) struct Route {
    pub method: Method,
    /// Segments separated by `/`; `{name}` takes any one segment.
    pub pattern: &'static str,
    pub access: Access,
    pub handler: Handler,
}

const fn route(method: Method, pattern: &'static str, handler: Handler) -> Route {
    Route {
        method,
        pattern,
        access: Access::Token,
        handler,
    }
}

const fn admin_only(method: Method, pattern: &'static str, handler: Handler) -> Route {
    Route {
        method,
        pattern,
        access: Access::Admin,
        handler,
    }
}

const fn open(pattern: &'static str, handler: Handler) -> Route {
    Route {
        method: Method::GET,
        pattern,
        access: Access::Open,
        handler,
    }
}

use Handler::{Canary, Change, Plain};

/// Every path the admin listener answers (SPEC §3). HEAD takes the GET routes.
#[rustfmt::skip]
/// Each is described in `openapi::OPERATIONS` too (a test checks).
pub(super) static ROUTES: [Route; 21] = [
    open("healthz", Plain(handlers::healthz)),
    open("readyz", Plain(handlers::readyz)),
    // The page holds nothing secret: it asks for the token the API calls need.
    open("", Plain(handlers::dashboard)),
    open("assets/{file}", Plain(handlers::dashboard)),
    route(Method::GET, "metrics", Plain(handlers::metrics)),
    route(Method::GET, "api/v1/openapi.json", Plain(handlers::openapi)),
    route(Method::GET, "api/v1/routes", Plain(handlers::routes)),
    route(Method::GET, "api/v1/routes/{route}", Plain(handlers::route)),
    route(Method::PUT, "api/v1/routes/{route}/weights", Change(handlers::set_weights)),
    route(Method::DELETE, "api/v1/routes/{route}/weights", Change(handlers::reset)),
    route(Method::POST, "api/v1/routes/{route}/promote", Change(handlers::promote)),
    route(Method::POST, "api/v1/routes/{route}/rollback", Change(handlers::rollback)),
    route(Method::POST, "api/v1/routes/{route}/backends/{backend}/endpoints/{endpoint}/drain", Plain(handlers::drain)),
    route(Method::POST, "api/v1/routes/{route}/backends/{backend}/endpoints/{endpoint}/undrain", Plain(handlers::undrain)),
    route(Method::GET, "api/v1/routes/{route}/mirror", Plain(handlers::mirror)),
    // Before `{action}`, which would take it too: SPEC §3 lists it on its own.
    route(Method::POST, "api/v1/routes/{route}/canary/approve", Canary(handlers::canary_approve)),
    route(Method::POST, "api/v1/routes/{route}/canary/{action}", Canary(handlers::canary)),
    route(Method::GET, "api/v1/history", Plain(handlers::history)),
    route(Method::GET, "api/v1/stats", Plain(handlers::stats)),
    admin_only(Method::POST, "api/v1/reload", Plain(handlers::reload)),
    route(Method::GET, "api/v1/fleet", Plain(handlers::fleet)),
];

/// Where a request lands in [`ROUTES`].
pub(super) enum Lookup<'a> {
    Found(&'static Route, Call<'a>),
    /// The path is known; the method is none of these.
    WrongMethod(Vec<Method>),
    NotFound,
}

/// Finds the route for `method` (HEAD as GET) and the decoded `segments`.
pub(super) fn lookup<'a>(method: &Method, segments: &'a [String], query: &'a str) -> Lookup<'a> {
    let method = if method == Method::HEAD {
        &Method::GET
    } else {
        method
    };
    let mut allowed = Vec::new();
    for route in &ROUTES {
        let Some(params) = match_pattern(route.pattern, segments) else {
            continue;
        };
        if route.method == method {
            let call = Call {
                segments,
                params,
                query,
            };
            return Lookup::Found(route, call);
        }
        if route.method == Method::GET {
            allowed.extend([Method::GET, Method::HEAD]);
        } else {
            allowed.push(route.method.clone());
        }
    }
    if allowed.is_empty() {
        Lookup::NotFound
    } else {
        Lookup::WrongMethod(allowed)
    }
}

/// The `{name}` → segment pairs when `segments` fit `pattern`.
fn match_pattern<'a>(
    pattern: &'static str,
    segments: &'a [String],
) -> Option<Vec<(&'static str, &'a str)>> {
    let parts = pattern.split('/').filter(|p| !p.is_empty());
    if parts.clone().count() != segments.len() {
        return None;
    }
    let mut params = Vec::new();
    for (part, segment) in parts.zip(segments) {
        match part.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
            Some(name) => params.push((name, segment.as_str())),
            None if part == segment => {}
            None => return None,
        }
    }
    Some(params)
}

/// The path's non-empty segments, each `%XX`-decoded (an endpoint address
/// travels as one segment: `127.0.0.1%3A8081`).
pub(super) fn segments(path: &str) -> Vec<String> {
    path.split('/')
        .filter(|s| !s.is_empty())
        .map(percent_decode)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    type Found = (&'static str, Vec<String>);

    fn find(method: Method, path: &str) -> Result<Found, Vec<Method>> {
        let segments = segments(path);
        match lookup(&method, &segments, "") {
            Lookup::Found(route, call) => {
                let params = call.params.iter().map(|(_, v)| v.to_string()).collect();
                Ok((route.pattern, params))
            }
            Lookup::WrongMethod(allowed) => Err(allowed),
            Lookup::NotFound => Err(Vec::new()),
        }
    }

    /// The dashboard's files are HTML and assets, not API.
    fn documented(pattern: &str) -> bool {
        !(pattern.is_empty() || pattern.starts_with("assets/"))
    }

    #[test]
    fn every_route_is_described_in_the_openapi_document_with_its_access() {
        use crate::control::admin::openapi::OPERATIONS;
        for route in ROUTES.iter().filter(|r| documented(r.pattern)) {
            let op = OPERATIONS
                .iter()
                .find(|op| op.method == route.method && op.pattern == route.pattern);
            let Some(op) = op else {
                panic!(
                    "{} /{} is in ROUTES but not in openapi::OPERATIONS",
                    route.method, route.pattern
                );
            };
            assert_eq!(
                op.open,
                route.access == Access::Open,
                "{} /{}: the document and the route table disagree on the token",
                route.method,
                route.pattern
            );
        }
        for op in &OPERATIONS {
            assert!(
                ROUTES
                    .iter()
                    .any(|r| r.method == op.method && r.pattern == op.pattern),
                "{} /{} is described but not in ROUTES",
                op.method,
                op.pattern
            );
        }
    }

    #[test]
    fn percent_escapes_decode() {
        assert_eq!(percent_decode("127.0.0.1%3A8081"), "127.0.0.1:8081");
        assert_eq!(percent_decode("https%3A%2F%2Fa%3A1"), "https://a:1");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz"), "%zz");
    }

    #[test]
    fn paths_find_their_route_and_parameters() {
        assert_eq!(
            find(Method::PUT, "/api/v1/routes/web/weights"),
            Ok(("api/v1/routes/{route}/weights", vec!["web".to_string()]))
        );
        let drain = "/api/v1/routes/web/backends/blue/endpoints/127.0.0.1%3A8081/drain";
        assert_eq!(
            find(Method::POST, drain).map(|(_, params)| params),
            Ok(vec!["web".into(), "blue".into(), "127.0.0.1:8081".into()])
        );
        assert_eq!(
            find(Method::HEAD, "//api/v1//history/").map(|(p, _)| p),
            Ok("api/v1/history")
        );
        assert_eq!(find(Method::GET, "/").map(|(p, _)| p), Ok(""));
        // An escaped slash stays inside its one segment.
        assert_eq!(
            find(Method::GET, "/api/v1/routes/a%2Fb").map(|(_, params)| params),
            Ok(vec!["a/b".to_string()])
        );
    }

    #[test]
    fn a_known_path_with_another_method_says_which_methods_it_takes() {
        assert_eq!(find(Method::GET, "/api/v1/reload"), Err(vec![Method::POST]));
        assert_eq!(
            find(Method::POST, "/api/v1/routes/web/weights"),
            Err(vec![Method::PUT, Method::DELETE])
        );
        assert_eq!(
            find(Method::POST, "/healthz"),
            Err(vec![Method::GET, Method::HEAD])
        );
        assert_eq!(find(Method::GET, "/api/v1/nope"), Err(Vec::new()));
        let unknown_action = "/api/v1/routes/web/backends/b/endpoints/e/explode";
        assert_eq!(find(Method::POST, unknown_action), Err(Vec::new()));
    }
}
