# CivicHub tasks. `just --list` shows them.

# Build and run the hub on the embedded default (SQLite under ./data).
run *ARGS:
    cargo run --release -- serve {{ARGS}}

# The whole test suite (installs and starts what it needs).
test:
    bash tests/run.sh

# OIDC throughput and latency against oidc-provider, RSS, and password logins against raw argon2.
bench-oidc:
    bash bench/oidc/run.sh

# Search quality: nDCG@10 and Recall@5 of the knowledge base on knowledge-base/eval/.
kb-eval:
    cargo run --release -p civichub-kb --example relevance_evaluation

# Knowledge-base indexing and search (HTTP, raw Tantivy, PostgreSQL full-text) on a synthetic corpus.
bench-kb:
    bash bench/kb/run.sh

# Messaging throughput and latency (API → CMPP simulator) against raw JetStream publishing.
bench-bus:
    bash bench/bus/run.sh

# Ticket registrations per second and registration → handler's DingTalk notice latency.
bench-hotline:
    bash bench/hotline/run.sh
