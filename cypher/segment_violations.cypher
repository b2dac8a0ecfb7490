// name: segment_violations
// category: segmentation
// description: Observed communications that the policy denies, with the deciding rule. The policy is evaluated in Python by twin.policy.engine.PolicyEngine (first match wins, selectors over zone, class, CIDR and more, which Cypher cannot express soundly); its decisions are passed in as $decisions, a list of maps {src_id, dst_id, proto, dst_port, rule}, one per denied communication, and this query joins them to the graph.
// parameters: $decisions
// limits: no paths; LIMIT 100000 rows
// cannot see: flows no exporter recorded; attempts a firewall already dropped look the same as sessions
// revision: 1
UNWIND $decisions AS decision
MATCH (src)-[c:COMMUNICATES_WITH]->(dst)
WHERE (src:Device OR src:External)
  AND (dst:Device OR dst:External)
  AND coalesce(src.device_id, src.address) = decision.src_id
  AND coalesce(dst.device_id, dst.address) = decision.dst_id
  AND c.proto = decision.proto
  AND c.dst_port = decision.dst_port
OPTIONAL MATCH (src)-[:IN_SEGMENT]->(ss:Segment)
OPTIONAL MATCH (dst)-[:IN_SEGMENT]->(ds:Segment)
RETURN decision.src_id AS src_id,
       src.hostname AS src_hostname,
       coalesce(head(src.ips), src.address) AS src_ip,
       CASE WHEN src:External THEN 'internet' ELSE ss.segment_id END AS src_segment,
       decision.dst_id AS dst_id,
       dst.hostname AS dst_hostname,
       coalesce(head(dst.ips), dst.address) AS dst_ip,
       CASE WHEN dst:External THEN 'internet' ELSE ds.segment_id END AS dst_segment,
       c.proto AS proto,
       c.dst_port AS dst_port,
       c.flows AS flows,
       c.bytes AS bytes,
       c.first_seen AS first_seen,
       c.last_seen AS last_seen,
       decision.rule AS rule,
       CASE
         WHEN dst.criticality = 'life_critical' THEN 'critical'
         WHEN dst.criticality = 'high' OR src:External THEN 'high'
         WHEN ss IS NULL OR ds IS NULL OR ss.segment_id <> ds.segment_id THEN 'medium'
         ELSE 'low'
       END AS severity
ORDER BY src_id, dst_id, proto, dst_port
LIMIT 100000
