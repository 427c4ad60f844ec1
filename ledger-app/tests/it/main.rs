//! The command side against a real PostgreSQL: each test has a database of its own.

mod held_states;
mod waits;
