//! One function per admin endpoint: read the path, query and body, ask
//! [`State`](crate::control::State) or the canary controller, answer with a
//! view from [`api`](super::api).

use std::sync::atomic::Ordering;

use http::StatusCode;

use super::api::{
    BackendView, EndpointView, FleetAnswer, FleetLinkView, HistoryPage, MirrorOutcomes, MirrorView,
    PointView, PromoteBody, ReloadAnswer, RollbackBody, RouteAnswer, RouteStats, RouteView,
    RoutesAnswer, SeriesView, StatsView, WeightsBody,
};
use super::call::{Call, percent_decode};
use super::{Admin, AdminError, AdminResponse, dashboard, json_ok, text_response};
use crate::config::HostMatch;
use crate::control::canary;
use crate::control::history::Source;
use crate::control::{Change, Route};

/// What every handler returns: an answer, or a refusal `handle` renders.
pub(super) type Reply = Result<AdminResponse, AdminError>;

/// History page size when none is asked for, and the most one page holds.
const HISTORY_PAGE: usize = 50;
const HISTORY_PAGE_MAX: usize = 1000;

pub(super) fn healthz(_: &Admin, _: &Call) -> Reply {
    Ok(text_response(StatusCode::OK, "ok\n"))
}

/// 503 once shutdown has started, so load balancers stop sending.
pub(super) fn readyz(admin: &Admin, _: &Call) -> Reply {
    Ok(if admin.draining.load(Ordering::Relaxed) {
        text_response(StatusCode::SERVICE_UNAVAILABLE, "draining\n")
    } else {
        text_response(StatusCode::OK, "ready\n")
    })
}

/// `GET /` and `GET /assets/{file}`.
pub(super) fn dashboard(_: &Admin, call: &Call) -> Reply {
    let segments: Vec<&str> = call.segments.iter().map(String::as_str).collect();
    dashboard::asset(&segments)
        .ok_or_else(|| AdminError::new(StatusCode::NOT_FOUND, "no such dashboard file"))
}

/// `GET /metrics`: Prometheus text format.
pub(super) fn metrics(admin: &Admin, _: &Call) -> Reply {
    let snapshot = admin.state.snapshot_full();
    let mut text = admin
        .state
        .telemetry()
        .render(|out| crate::control::gauges::render_gauges(out, &snapshot));
    if let Some(fleet) = &admin.fleet {
        text.push_str(&crate::control::fleet::connected_metric(fleet.connected()));
    }
    Ok(super::metrics_response(text))
}

pub(super) fn openapi(_: &Admin, _: &Call) -> Reply {
    Ok(json_ok(super::openapi::document()))
}

pub(super) fn routes(admin: &Admin, _: &Call) -> Reply {
    let snapshot = admin.state.snapshot_full();
    let routes = snapshot
        .routes
        .iter()
        .map(|r| route_view(admin, r))
        .collect();
    Ok(json_ok(&RoutesAnswer {
        revision: snapshot.revision,
        routes,
        fleet: admin.fleet.as_ref().map(|f| FleetLinkView {
            connected: f.connected(),
            instance: f.instance().to_string(),
            zone: f.zone().map(str::to_string),
        }),
    }))
}

pub(super) fn route(admin: &Admin, call: &Call) -> Reply {
    route_answer(admin, call.param("route"), None)
}

/// What a weight-changing handler asks for: the route and the change, which
/// `dispatch` applies (through the fleet when there is one).
pub(super) type Asked = Result<(String, Change), AdminError>;

/// What the canary handler asks for: the route and the action.
pub(super) type AskedAction = Result<(String, canary::Action), AdminError>;

pub(super) fn set_weights(_: &Admin, call: &Call, body: &[u8]) -> Asked {
    let body: WeightsBody = parse_json(body)?;
    let route = call.param("route").to_string();
    let change = Change::SetWeights {
        route: route.clone(),
        weights: body.weights,
        if_revision: body.if_revision,
        source: Source::Admin,
        reason: body.reason.unwrap_or_default(),
        zone: body.zone,
    };
    Ok((route, change))
}

pub(super) fn promote(_: &Admin, call: &Call, body: &[u8]) -> Asked {
    let body: PromoteBody = parse_json(body)?;
    let route = call.param("route").to_string();
    let change = Change::Promote {
        route: route.clone(),
        backend: body.backend,
        reason: body.reason.unwrap_or_default(),
    };
    Ok((route, change))
}

pub(super) fn rollback(_: &Admin, call: &Call, body: &[u8]) -> Asked {
    let body: RollbackBody = parse_json(body)?;
    let route = call.param("route").to_string();
    let change = Change::Rollback {
        route: route.clone(),
        to_revision: body.to_revision,
    };
    Ok((route, change))
}

/// `DELETE /api/v1/routes/{route}/weights[?zone=Z]`: back to the file's
/// weights, or (in a fleet) drop zone Z's weights.
pub(super) fn reset(_: &Admin, call: &Call, _: &[u8]) -> Asked {
    let route = call.param("route").to_string();
    let mut zone = None;
    for pair in call.query.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("zone", value)) if !value.is_empty() => zone = Some(percent_decode(value)),
            _ => {
                return Err(AdminError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    format!("unknown query parameter `{pair}` (zone)"),
                ));
            }
        }
    }
    let change = match zone {
        Some(zone) => Change::DropZone {
            route: route.clone(),
            zone,
        },
        None => Change::Reset {
            route: route.clone(),
        },
    };
    Ok((route, change))
}

/// `GET /api/v1/fleet`: every live instance; 404 when not in fleet mode.
pub(super) fn fleet(admin: &Admin, _: &Call) -> Reply {
    let fleet = admin.fleet.as_ref().ok_or_else(|| {
        AdminError::new(
            StatusCode::NOT_FOUND,
            "this instance is not in fleet mode (no [fleet] in its config)",
        )
    })?;
    Ok(json_ok(&FleetAnswer {
        instances: fleet.instances(),
        problems: fleet.problems(),
    }))
}

pub(super) fn drain(admin: &Admin, call: &Call) -> Reply {
    set_draining(admin, call, true)
}

pub(super) fn undrain(admin: &Admin, call: &Call) -> Reply {
    set_draining(admin, call, false)
}

fn set_draining(admin: &Admin, call: &Call, draining: bool) -> Reply {
    let route = call.param("route");
    admin.state.apply(Change::Drain {
        route: route.to_string(),
        backend: call.param("backend").to_string(),
        endpoint: call.param("endpoint").to_string(),
        drain: draining,
    })?;
    route_answer(admin, route, None)
}

/// `POST /api/v1/routes/{route}/canary/{action}`: the route and the action,
/// which `dispatch` hands to the controller off the runtime's threads (in a
/// fleet an action waits for etcd).
pub(super) fn canary(_: &Admin, call: &Call) -> AskedAction {
    let action = canary::Action::parse(call.param("action")).ok_or_else(|| {
        AdminError::new(
            StatusCode::NOT_FOUND,
            "no such canary action (start, pause, resume, abort, approve)",
        )
    })?;
    Ok((call.param("route").to_string(), action))
}

/// `POST /api/v1/routes/{route}/canary/approve`: lets a canary awaiting
/// approval go on (409 when it is not waiting).
pub(super) fn canary_approve(_: &Admin, call: &Call) -> AskedAction {
    Ok((call.param("route").to_string(), canary::Action::Approve))
}

/// `GET /api/v1/routes/{route}/mirror`.
pub(super) fn mirror(admin: &Admin, call: &Call) -> Reply {
    let name = call.param("route");
    let snapshot = admin.state.snapshot_full();
    let route = snapshot.route(name).ok_or_else(|| no_route(name))?;
    let (Some(config), Some(state)) = (&route.config.mirror, &route.mirror) else {
        return Err(AdminError::new(
            StatusCode::NOT_FOUND,
            format!("route `{name}` has no [routes.mirror]"),
        ));
    };
    let [matched, mismatch, error, skipped] = state.counts();
    Ok(json_ok(&MirrorView {
        route: name.to_string(),
        backend: config.backend.clone(),
        percent: config.percent.percent(),
        compare: config.compare,
        max_body: config.max_body,
        max_concurrent: config.max_concurrent,
        outcomes: MirrorOutcomes {
            matched,
            mismatch,
            error,
            skipped,
        },
        mismatches: state.mismatches().into_iter().map(Into::into).collect(),
    }))
}

/// `GET /api/v1/history?limit=N&before=REV&route=NAME`, newest first.
pub(super) fn history(admin: &Admin, call: &Call) -> Reply {
    let mut limit = HISTORY_PAGE;
    let mut before = None;
    let mut route = None;
    for pair in call.query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let value = percent_decode(value);
        let number = || {
            value.parse::<u64>().map_err(|_| {
                AdminError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    format!("`{key}` must be a whole number"),
                )
            })
        };
        match key {
            "limit" => {
                limit = usize::try_from(number()?)
                    .unwrap_or(HISTORY_PAGE_MAX)
                    .clamp(1, HISTORY_PAGE_MAX)
            }
            "before" => before = Some(number()?),
            "route" => route = Some(value),
            _ => {
                return Err(AdminError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    format!("unknown query parameter `{key}` (limit, before, route)"),
                ));
            }
        }
    }
    let (revisions, next_before) = admin.state.history(limit, before, route.as_deref());
    Ok(json_ok(&HistoryPage {
        revisions: revisions.into_iter().map(Into::into).collect(),
        next_before,
    }))
}

/// `GET /api/v1/stats`: per backend, the finished intervals of the last 15
/// minutes (`points`, oldest first) and the one in progress (`current`).
pub(super) fn stats(admin: &Admin, _: &Call) -> Reply {
    let snapshot = admin.state.snapshot_full();
    let now = crate::telemetry::stats::current_interval();
    let routes = snapshot
        .routes
        .iter()
        .map(|route| {
            let backends = route
                .backends
                .iter()
                .map(|b| {
                    let series = &b.metrics.series;
                    let view = SeriesView {
                        points: series
                            .points(now)
                            .into_iter()
                            .map(PointView::from)
                            .collect(),
                        current: series.point(now).into(),
                    };
                    (b.name.clone(), view)
                })
                .collect();
            (route.name().to_string(), RouteStats { backends })
        })
        .collect();
    Ok(json_ok(&StatsView {
        interval_seconds: crate::telemetry::stats::INTERVAL_SECS,
        routes,
    }))
}

/// `POST /api/v1/reload`: 422 with every error when the file is invalid.
pub(super) fn reload(admin: &Admin, _: &Call) -> Reply {
    let reloader = admin.reloader.as_ref().ok_or_else(|| {
        AdminError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "this proxy was not started from a config file",
        )
    })?;
    match reloader.reload() {
        Ok(applied) => Ok(json_ok(&ReloadAnswer {
            revision: applied.revision,
            changed: !applied.routes_changed.is_empty(),
            routes_changed: applied.routes_changed,
        })),
        Err(errors) => Err(AdminError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid config: the running config stays",
        )
        .with_details(errors.0.iter().map(ToString::to_string).collect())),
    }
}

/// The route as it is now, with `revision` (the change's) or the current one.
pub(super) fn route_answer(admin: &Admin, name: &str, revision: Option<u64>) -> Reply {
    let snapshot = admin.state.snapshot_full();
    let route = snapshot.route(name).ok_or_else(|| no_route(name))?;
    Ok(json_ok(&RouteAnswer {
        revision: revision.unwrap_or(snapshot.revision),
        route: route_view(admin, route),
    }))
}

/// The view of one route.
fn route_view(admin: &Admin, route: &Route) -> RouteView {
    let host = route.config.host.as_ref().map(|h| match h {
        HostMatch::Exact(name) => name.clone(),
        HostMatch::Suffix(suffix) => format!("*{suffix}"),
    });
    let backends = route
        .backends
        .iter()
        .map(|b| BackendView {
            name: b.name.clone(),
            desired_weight: b.weight.percent(),
            effective_weight: b.effective.percent(),
            endpoints: b
                .endpoints
                .iter()
                .map(|e| EndpointView {
                    address: e.addr.to_string(),
                    healthy: e.is_healthy(),
                    draining: e.is_draining(),
                    state: e.state().to_string(),
                })
                .collect(),
        })
        .collect();
    RouteView {
        name: route.name().to_string(),
        host,
        path_prefix: route.config.path_prefix.clone(),
        admin_override: admin.state.has_override(route.name()),
        backends,
        canary: admin.canary.view(route),
    }
}

fn no_route(name: &str) -> AdminError {
    AdminError::new(StatusCode::NOT_FOUND, format!("no route called `{name}`"))
}

/// A JSON body of at most [`super::MAX_BODY`]; an empty body reads as `{}`.
fn parse_json<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, AdminError> {
    let bytes: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        bytes
    };
    serde_json::from_slice(bytes).map_err(|e| {
        // Syntax errors are 400; a well-formed body with wrong fields or values is 422.
        let status = if e.is_syntax() || e.is_eof() {
            StatusCode::BAD_REQUEST
        } else {
            StatusCode::UNPROCESSABLE_ENTITY
        };
        AdminError::new(status, format!("invalid JSON body: {e}"))
    })
}
