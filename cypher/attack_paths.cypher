// name: attack_paths
// category: attack-path
// description: Shortest observed-mode attack paths from entry devices or External endpoints to target devices over COMMUNICATES_WITH. Entry and target ids are resolved from the site selectors by the caller. Intermediate nodes are Devices that are neither entries nor targets. Permitted mode needs the policy engine and runs in Python only.
// parameters: $entry_ids, $target_ids, $max_paths
// limits: at most 6 hops (literal bound, because Cypher takes no parameter in a variable-length pattern; the Python form takes max_hops up to 12); LIMIT $max_paths paths; no k-per-pair bound and no vulnerable-service costs
// cannot see: paths longer than 6 hops; permitted-mode paths; pivots through External endpoints
// revision: 1
MATCH (entry)
WHERE (entry:Device AND entry.device_id IN $entry_ids) OR (entry:External AND entry.address IN $entry_ids)
MATCH p = (entry)-[:COMMUNICATES_WITH*1..6]->(target:Device)
WHERE target.device_id IN $target_ids
  AND all(n IN nodes(p)[1..-1] WHERE n:Device AND NOT n.device_id IN $entry_ids AND NOT n.device_id IN $target_ids)
  AND all(i IN range(0, size(nodes(p)) - 2) WHERE NOT nodes(p)[i] IN nodes(p)[i + 1..])
WITH p, entry, target, length(p) AS hops
RETURN 'observed' AS mode,
       coalesce(entry.device_id, entry.address) AS entry_id,
       entry.hostname AS entry_hostname,
       target.device_id AS target_id,
       target.hostname AS target_hostname,
       target.device_class AS target_class,
       hops,
       toFloat(hops) AS cost,
       [hop IN nodes(p) | coalesce(hop.device_id, hop.address)] AS path,
       [hop IN nodes(p) | coalesce(hop.hostname, hop.device_id, hop.address)] AS path_hostnames,
       CASE target.criticality
         WHEN 'life_critical' THEN 'critical'
         WHEN 'high' THEN 'high'
         WHEN 'medium' THEN 'medium'
         ELSE 'low'
       END AS severity
ORDER BY cost, hops, path
LIMIT $max_paths
