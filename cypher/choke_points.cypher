// name: choke_points
// category: attack-path
// description: Devices ranked by the number of observed-mode attack paths (as in attack_paths.cypher) that pass through them. Segment-pair counts and the minimum edge cut are computed in Python from the same paths.
// parameters: $entry_ids, $target_ids, $max_paths
// limits: at most 6 hops (literal bound, see attack_paths.cypher); paths LIMIT $max_paths before counting; LIMIT 1000 rows
// cannot see: paths longer than 6 hops or beyond $max_paths; permitted-mode paths; the minimum cut
// revision: 1
MATCH (entry)
WHERE (entry:Device AND entry.device_id IN $entry_ids) OR (entry:External AND entry.address IN $entry_ids)
MATCH p = (entry)-[:COMMUNICATES_WITH*1..6]->(target:Device)
WHERE target.device_id IN $target_ids
  AND all(n IN nodes(p)[1..-1] WHERE n:Device AND NOT n.device_id IN $entry_ids AND NOT n.device_id IN $target_ids)
  AND all(i IN range(0, size(nodes(p)) - 2) WHERE NOT nodes(p)[i] IN nodes(p)[i + 1..])
WITH p
ORDER BY length(p)
LIMIT $max_paths
WITH collect(p) AS paths
WITH paths, size(paths) AS total
UNWIND paths AS p
UNWIND nodes(p)[1..-1] AS hop
WITH hop, total, count(DISTINCT p) AS paths_through
RETURN 'device' AS kind,
       hop.device_id AS item,
       paths_through,
       toFloat(paths_through) / total AS share,
       CASE
         WHEN toFloat(paths_through) / total >= 0.5 THEN 'high'
         WHEN toFloat(paths_through) / total >= 0.2 THEN 'medium'
         ELSE 'low'
       END AS severity
ORDER BY paths_through DESC, item
LIMIT 1000
