//! DingTalk open-platform adapter for CivicHub (app token, work notices, login), with a simulator.
