//! CMPP 2.0 and Alibaba Cloud SMS adapters for CivicHub, with a CMPP gateway simulator.
