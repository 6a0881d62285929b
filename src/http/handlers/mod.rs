//! One module per resource. A handler extracts, calls one service and converts the result.

pub mod audit;
pub mod commands;
pub mod files;
pub mod health;
pub mod keys;
pub mod output;
pub mod projects;
pub mod sessions;
pub mod shell;
pub mod terminal;
pub mod webhooks;
