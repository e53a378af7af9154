//! The parts of `executor serve` that are libraries before they are a
//! server: turning a forge's webhook delivery into a typed trigger
//! ([`webhook`]) and sending commit statuses back to the forge ([`forge`]).
//! Nothing here listens on a socket or touches the queue: the HTTP layer
//! hands these modules the headers and body bytes it received, and the run
//! queue hands the reporter the states of runs and jobs.

pub mod forge;
pub mod webhook;
