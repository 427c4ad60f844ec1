//! The payroll domain. Pure: no I/O, no clock, no database.
