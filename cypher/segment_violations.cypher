// name: segment_violations
// category: segmentation
// description: Observed communications that the policy denies, with the deciding rule. The policy is evaluated in Python by twin.policy.engine.PolicyEngine (first match wins, selectors over zone, class, CIDR and more, which Cypher cannot express soundly); its decisions are passed in as $decisions, a list of maps {src_id, src_kind, dst_id, dst_kind, proto, dst_port, rule}, one per denied communication, and this query joins them to the graph for the endpoints, segments, counters and severity.
// parameters: $site, $decisions
// limits: no paths; LIMIT 100000 rows
// cannot see: flows no exporter recorded; attempts a firewall already dropped look the same as sessions
// revision: 2
UNWIND $decisions AS decision
OPTIONAL MATCH (src_device:Device {site: $site, device_id: decision.src_id})
OPTIONAL MATCH (src_external:External {site: $site, address: decision.src_id})
OPTIONAL MATCH (dst_device:Device {site: $site, device_id: decision.dst_id})
OPTIONAL MATCH (dst_external:External {site: $site, address: decision.dst_id})
WITH decision,
     CASE WHEN decision.src_kind = 'external' THEN src_external ELSE src_device END AS src,
     CASE WHEN decision.dst_kind = 'external' THEN dst_external ELSE dst_device END AS dst
MATCH (src)-[c:COMMUNICATES_WITH {proto: decision.proto, dst_port: decision.dst_port}]->(dst)
OPTIONAL MATCH (src)-[:IN_SEGMENT]->(src_segment:Segment)
OPTIONAL MATCH (dst)-[:IN_SEGMENT]->(dst_segment:Segment)
WITH decision, src, dst, c,
     src:External AS from_internet,
     CASE WHEN src:External THEN 'internet' ELSE src_segment.segment_id END AS src_segment_id,
     CASE WHEN dst:External THEN 'internet' ELSE dst_segment.segment_id END AS dst_segment_id,
     CASE WHEN dst:External THEN NULL ELSE coalesce(dst.criticality, 'low') END AS dst_criticality,
     CASE WHEN src:External THEN src.address
          ELSE coalesce(CASE WHEN src.hostname <> '' THEN src.hostname END,
                        CASE WHEN head(src.ips) <> '' THEN head(src.ips) END, decision.src_id) END AS src_label,
     CASE WHEN dst:External THEN dst.address
          ELSE coalesce(CASE WHEN dst.hostname <> '' THEN dst.hostname END,
                        CASE WHEN head(dst.ips) <> '' THEN head(dst.ips) END, decision.dst_id) END AS dst_label
RETURN decision.src_id AS src_id,
       CASE WHEN from_internet OR src.hostname = '' THEN NULL ELSE src.hostname END AS src_hostname,
       CASE WHEN from_internet THEN src.address ELSE head(src.ips) END AS src_ip,
       src_segment_id AS src_segment,
       decision.dst_id AS dst_id,
       CASE WHEN dst:External OR dst.hostname = '' THEN NULL ELSE dst.hostname END AS dst_hostname,
       CASE WHEN dst:External THEN dst.address ELSE head(dst.ips) END AS dst_ip,
       dst_segment_id AS dst_segment,
       c.proto AS proto,
       c.dst_port AS dst_port,
       c.flows AS flows,
       c.bytes AS bytes,
       c.first_seen AS first_seen,
       c.last_seen AS last_seen,
       decision.rule AS rule,
       CASE
         WHEN dst_criticality = 'life_critical' THEN 'critical'
         WHEN dst_criticality = 'high' OR from_internet THEN 'high'
         WHEN decision.rule = 'default:intra-segment' OR src_segment_id = dst_segment_id THEN 'low'
         ELSE 'medium'
       END AS severity,
       src_label + ' (' + coalesce(src_segment_id, 'no segment') + ') -> ' + dst_label + ' ('
         + coalesce(dst_segment_id, 'no segment') + ') ' + c.proto + '/' + toString(c.dst_port) + ': '
         + toString(c.flows) + CASE WHEN c.flows = 1 THEN ' flow denied by ' ELSE ' flows denied by ' END
         + decision.rule AS evidence
ORDER BY src_id, dst_id, proto, dst_port
LIMIT 100000
