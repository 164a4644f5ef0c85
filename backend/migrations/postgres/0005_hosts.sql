-- Which nodes serve which services: a node records a service when it starts
-- its instances and forgets it when it stops them. A node without a
-- service's instances forwards its predictions to a live node that has them.
CREATE TABLE hosts (
    service TEXT NOT NULL,
    node    TEXT NOT NULL,
    PRIMARY KEY (service, node)
);
