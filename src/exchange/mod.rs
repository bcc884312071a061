//! The protocol-neutral exchange core: what happens to one request whatever
//! protocol carried it.
//! - [`forwarding`]: header, framing and `Host` rules.
//! - [`body`]: the body types of the request path.
//! - [`mirror`]: shadow copies and their comparison with the primary.

pub mod body;
pub mod forwarding;
pub mod mirror;
