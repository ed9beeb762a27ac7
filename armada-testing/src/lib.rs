//! The testing kit of Armada projects, for their own tests and Armada's.
//!
//! - [`TestRun`]: a script run over jobs given in code, everything in memory, in one call:
//!   typed outputs, statuses, attempts, errors, events and evidence come back as a
//!   [`TestReport`]. What a unit test of a script needs, with the framework's retries, time
//!   limits and reporting, and no project folder.
//! - [`binary`]: a project's binary as a user runs it: a copy of its `config/` to change
//!   ([`binary::ProjectCopy`]), a command without the caller's backend variables
//!   ([`binary::command`]) and a `launch` followed from the background ([`binary::Launch`]).
//!
//! Reached from the facade as `armada::testing` (feature `testing`, for dev-dependencies).

pub mod binary;
mod run;

pub use run::{TestJob, TestReport, TestRun};
