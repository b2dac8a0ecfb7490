// name: external_exposure
// category: exposure
// description: Devices that talk to External endpoints outside the allowlist (outbound) or that External endpoints reach (inbound). The allowlist is expanded to exact addresses by the caller ($allowlist); prefixes must be expanded or pre-matched before the call.
// parameters: $allowlist, $medical_classes, $guest_zones
// limits: no paths; LIMIT 100000 rows
// cannot see: traffic behind a proxy or NAT; inbound exposure no flow has used yet
// revision: 1
MATCH (d:Device)-[c:COMMUNICATES_WITH]->(e:External)
WHERE NOT e.address IN $allowlist
OPTIONAL MATCH (d)-[:IN_SEGMENT]->(s:Segment)
RETURN d.device_id AS device_id, d.hostname AS hostname, head(d.ips) AS ip, s.segment_id AS segment_id,
       d.device_class AS device_class, 'outbound' AS direction, e.address AS external,
       c.proto AS proto, c.dst_port AS dst_port, c.flows AS flows, c.bytes AS bytes,
       CASE
         WHEN d.role = 'medical' OR d.device_class IN $medical_classes OR d.criticality = 'life_critical' THEN 'high'
         WHEN s.zone IN $guest_zones THEN 'info'
         ELSE 'medium'
       END AS severity
UNION ALL
MATCH (e:External)-[c:COMMUNICATES_WITH]->(d:Device)
WHERE NOT e.address IN $allowlist
OPTIONAL MATCH (d)-[:IN_SEGMENT]->(s:Segment)
RETURN d.device_id AS device_id, d.hostname AS hostname, head(d.ips) AS ip, s.segment_id AS segment_id,
       d.device_class AS device_class, 'inbound' AS direction, e.address AS external,
       c.proto AS proto, c.dst_port AS dst_port, c.flows AS flows, c.bytes AS bytes,
       CASE
         WHEN d.role = 'medical' OR d.device_class IN $medical_classes OR d.criticality = 'life_critical' THEN 'critical'
         ELSE 'high'
       END AS severity
LIMIT 100000
