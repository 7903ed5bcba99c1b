//! Fusion-communication (call centre) adapter for CivicHub: call events in, voice notifications out, with a simulator.
