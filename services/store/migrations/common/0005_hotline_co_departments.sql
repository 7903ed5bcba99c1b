-- The co-handling departments (协办) of each ticket, so a department's
-- lists show the tickets it helps with beside those it leads.
CREATE TABLE hotline_co_departments (
    number TEXT NOT NULL,
    department TEXT NOT NULL,
    PRIMARY KEY (department, number)
);
CREATE INDEX hotline_co_departments_number ON hotline_co_departments(number);
