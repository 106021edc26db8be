//! Batched job-state polling (see [`Poller`]).
