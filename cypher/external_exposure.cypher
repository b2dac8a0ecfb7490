// name: external_exposure
// category: exposure
// description: Devices that talk to External endpoints outside the allowlist (outbound) or that External endpoints reach (inbound). The allowlist holds addresses, prefixes and domain names, and Cypher cannot match prefixes soundly, so the caller matches the site's External addresses against it in Python and passes the allowed ones as $allowed_externals.
// parameters: $site, $allowed_externals, $medical_classes, $guest_zones
// limits: no paths; LIMIT 100000 rows
// cannot see: traffic behind a proxy or NAT; inbound exposure no flow has used yet
// revision: 2
CALL () {
  MATCH (d:Device {site: $site})-[c:COMMUNICATES_WITH]->(e:External {site: $site})
  RETURN d, e, c, 'outbound' AS direction
  UNION ALL
  MATCH (e:External {site: $site})-[c:COMMUNICATES_WITH]->(d:Device {site: $site})
  RETURN d, e, c, 'inbound' AS direction
}
WITH d, e, c, direction
WHERE NOT e.address IN $allowed_externals
WITH d, direction, e.address AS external, c.proto AS proto, c.dst_port AS dst_port,
     sum(c.flows) AS flows, sum(c.bytes) AS bytes
OPTIONAL MATCH (d)-[:IN_SEGMENT]->(s:Segment)
WITH d, s, direction, external, proto, dst_port, flows, bytes,
     coalesce(d.role = 'medical', d.role IS NULL AND coalesce(d.device_class, 'unknown') IN $medical_classes)
       OR d.criticality = 'life_critical' AS sensitive,
     coalesce(CASE WHEN d.hostname <> '' THEN d.hostname END, CASE WHEN head(d.ips) <> '' THEN head(d.ips) END,
              d.device_id) AS label
RETURN d.device_id AS device_id,
       CASE WHEN d.hostname <> '' THEN d.hostname END AS hostname,
       head(d.ips) AS ip,
       s.segment_id AS segment_id,
       coalesce(d.device_class, 'unknown') AS device_class,
       direction,
       external,
       proto,
       dst_port,
       flows,
       bytes,
       CASE
         WHEN direction = 'inbound' AND sensitive THEN 'critical'
         WHEN direction = 'inbound' OR sensitive THEN 'high'
         WHEN s.zone IN $guest_zones THEN 'info'
         ELSE 'medium'
       END AS severity,
       label + CASE WHEN direction = 'outbound' THEN ' sent ' ELSE ' received ' END + toString(flows)
         + CASE WHEN flows = 1 THEN ' flow ' ELSE ' flows ' END
         + CASE WHEN direction = 'outbound' THEN 'to ' ELSE 'from ' END + external + ' ' + proto + '/'
         + toString(dst_port) + ', which is not on the allowlist' AS evidence
ORDER BY device_id, direction, external, proto, dst_port
LIMIT 100000
