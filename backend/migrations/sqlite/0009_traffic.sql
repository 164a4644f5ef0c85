-- A traffic split between versions of a service (blue-green, canary): the
-- share of requests, in per cent, each named version gets; versions not
-- named get none. No rows: the current version serves every request. A
-- version other than the current one is served by instances of its own,
-- placed as the service "<name>#v<version>" (see store::traffic).
CREATE TABLE traffic (
    service TEXT NOT NULL,
    version INTEGER NOT NULL,
    weight  INTEGER NOT NULL,
    PRIMARY KEY (service, version)
);
