-- The load each node measures on the services it serves, for the
-- autoscaler: requests answered per second and the average CPU use of its
-- instances (per cent of their cores), written every autoscaler period.
-- The node that decides (the live node with the smallest id) adds them up.
CREATE TABLE service_load (
    service   TEXT NOT NULL,
    node      TEXT NOT NULL,
    qps       DOUBLE PRECISION NOT NULL,
    cpu       DOUBLE PRECISION,
    instances BIGINT NOT NULL,
    at_ms     BIGINT NOT NULL,
    PRIMARY KEY (service, node)
);
