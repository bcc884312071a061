//! The protocol-neutral exchange core: what happens to one request whatever
//! protocol carried it, in the order it happens.
//! - [`forwarding`]: the `Host` rules checked first, then the header and
//!   framing rules of the message sent on.
//! - [`decide`]: route override, sticky bucket or weighted pick.
//! - [`attempt`]: the one attempt driver (endpoints, retries, same-endpoint
//!   replays, passive health).
//! - [`outcome`]: counting and logging the answer, and the answers
//!   sluicegate makes itself.
//! - [`body`]: the response body type; [`mirror`]: shadow copies.

pub mod attempt;
pub mod body;
pub mod decide;
pub mod forwarding;
pub mod mirror;
pub mod outcome;
