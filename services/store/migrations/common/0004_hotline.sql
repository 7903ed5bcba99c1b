-- The 12345 hotline. `doc` holds the whole ticket as JSON (the caller's
-- name and phone sealed with the hotline data key); the columns beside it
-- repeat what lists, deadlines and statistics select on. `caller_phone`
-- is a keyed hash of the phone, to find a caller's tickets.
CREATE TABLE hotline_tickets (
    number TEXT PRIMARY KEY,
    doc TEXT NOT NULL,
    status TEXT NOT NULL,
    channel TEXT NOT NULL,
    category TEXT,
    urgency TEXT NOT NULL,
    department TEXT,
    caller_phone TEXT,
    sign_due_ms BIGINT,
    due_ms BIGINT,
    created_ms BIGINT NOT NULL,
    updated_ms BIGINT NOT NULL,
    closed_ms BIGINT,
    -- Deadline alerts already raised, space-separated `kind:deadline_ms`
    -- (a moved deadline raises its alerts again).
    alerts TEXT NOT NULL DEFAULT '',
    -- When the next of those alerts falls due (none when nothing is pending).
    next_alert_ms BIGINT,
    -- The envelope a ticket was made from (a citizen's SMS), so a
    -- redelivered one does not make a second ticket.
    source_id TEXT
);
CREATE UNIQUE INDEX hotline_tickets_source ON hotline_tickets(source_id);
CREATE INDEX hotline_tickets_next_alert ON hotline_tickets(next_alert_ms);
CREATE INDEX hotline_tickets_status ON hotline_tickets(status, due_ms);
CREATE INDEX hotline_tickets_department ON hotline_tickets(department, status);
CREATE INDEX hotline_tickets_created ON hotline_tickets(created_ms);
CREATE INDEX hotline_tickets_caller ON hotline_tickets(caller_phone);

-- Every action on a ticket: who, when, what, from which state.
CREATE TABLE hotline_ticket_events (
    id TEXT PRIMARY KEY,
    number TEXT NOT NULL,
    event TEXT NOT NULL,
    action TEXT NOT NULL,
    actor TEXT NOT NULL,
    from_status TEXT,
    to_status TEXT NOT NULL,
    detail TEXT NOT NULL,
    at_ms BIGINT NOT NULL
);
CREATE INDEX hotline_ticket_events_number ON hotline_ticket_events(number, at_ms);

-- The last sequence number given out per day (YYYYMMDD, Beijing time).
CREATE TABLE hotline_counters (
    day TEXT PRIMARY KEY,
    last BIGINT NOT NULL
);

-- The call each agent is on, from the call centre's events, to pre-fill
-- the workbench; the caller's number is sealed like a ticket's.
CREATE TABLE hotline_calls (
    call_id TEXT PRIMARY KEY,
    agent TEXT NOT NULL,
    caller TEXT NOT NULL,
    state TEXT NOT NULL,
    at_ms BIGINT NOT NULL
);
CREATE INDEX hotline_calls_agent ON hotline_calls(agent, at_ms);

-- How often tickets of a category went to a department: the suggested
-- departments of a new ticket, kept as a running count.
CREATE TABLE hotline_dispatch_counts (
    category TEXT NOT NULL,
    department TEXT NOT NULL,
    n BIGINT NOT NULL,
    PRIMARY KEY (category, department)
);
