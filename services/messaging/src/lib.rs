//! CivicHub's messaging hub.
