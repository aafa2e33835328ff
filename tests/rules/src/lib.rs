//! The house's rules, written once in the layout chapter of the manual
//! (`docs/layout.md`) and checked against the tree on every test run:
//! every folder is listed there and every listed folder exists; crates
//! depend only on the workspace crates their row allows and never on the
//! crates it forbids; the host's folders use only the folders their row
//! allows (which makes a circle impossible, since the table itself is
//! checked to have none); generated WIT types appear only in the edge
//! modules that convert them.
//!
//! [`chapter`] reads the rules, [`source`] finds what a Rust file refers
//! to, [`check`] holds one function per rule, and [`tree`] reads the
//! repository for them. [`docs`] checks the manual's links and table of
//! contents; [`reuse`] a rule of the build: what the demo's build
//! compiles, the test build reuses.

#![deny(unsafe_code)]

pub mod chapter;
pub mod check;
pub mod docs;
pub mod reuse;
pub mod source;
pub mod tree;

pub use chapter::Rules;
pub use check::Violation;
