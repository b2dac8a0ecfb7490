// name: attack_paths
// category: attack-path
// description: The k shortest attack paths per (entry, target) pair, in (cost, hops, node ids) order, in two modes. Entry and target ids are resolved from the site selectors by the caller with the policy engine ($entry_ids for devices, $external_entry_ids for External sources). Observed mode searches COMMUNICATES_WITH on the server: a backward breadth-first search from the targets finds the nodes that reach a target within r hops, then simple paths grow hop by hop from the entries only into nodes that still reach a target within the hops left. Intermediate nodes are Devices (entries and targets included), a hop costs 1.0, or 0.5 when a relationship of the hop reaches a service in $vulnerable ("device_id/proto/port" keys). Permitted mode depends on the policy, which Cypher cannot evaluate, so the caller searches the permitted reachability graph of twin.analysis.attack_paths in Python and passes the paths as $permitted_paths [{ids, cost, hops}]; this query adds names, severity and evidence to them.
// parameters: $site, $modes, $entry_ids, $external_entry_ids, $target_ids, $vulnerable, $permitted_paths, $max_hops, $k, $max_paths
// limits: paths of at most $max_hops hops, by that many rounds of expansion; $k paths per (entry, target) pair; LIMIT $max_paths paths per mode. Observed mode holds every simple path from one entry that can still reach a target, so memory grows with the paths through densely connected nodes near the targets
// cannot see: paths longer than $max_hops; pivots through External endpoints; links (LLDP/CDP) as edges; the observed search has no expansion budget, where the Python form stops after MAX_EXPANSIONS partial paths and may then return fewer paths
// revision: 3
CALL () {
  // Observed mode, step 1: backward breadth-first search from the targets. reach[r] holds the nodes with a
  // target within 1..r hops whose intermediate nodes are Devices; an External node joins reach only as a start.
  MATCH (target:Device {site: $site})
  WHERE 'observed' IN $modes AND target.device_id IN $target_ids AND NOT target:Placeholder
  WITH collect(target) AS targets
  WITH reduce(state = {reach: [[]], frontier: targets}, r IN range(1, $max_hops) |
         head([added IN [COLLECT {
                UNWIND state.frontier AS next
                MATCH (node)-[:COMMUNICATES_WITH]->(next)
                WHERE ((node:Device AND NOT node:Placeholder) OR (node:External AND node.address IN $external_entry_ids))
                  AND NOT node IN last(state.reach)
                RETURN DISTINCT node
              }] | {reach: state.reach + [last(state.reach) + added], frontier: [n IN added WHERE n:Device]}])
       ).reach AS reach
  // Step 2: from every entry that reaches a target, extend simple paths hop by hop, only into nodes that still
  // reach a target within the hops left. One path per node sequence; it costs the cheapest relationship per hop.
  UNWIND [n IN last(reach) WHERE n:External OR n.device_id IN $entry_ids] AS entry
  WITH reach, reduce(state = {open: [{nodes: [entry], cost: 0.0}], done: []}, hop IN range(1, $max_hops) |
         head([extended IN [reduce(found = [], partial IN state.open | found + COLLECT {
                WITH partial, last(partial.nodes) AS tail
                MATCH (tail)-[c:COMMUNICATES_WITH]->(next:Device)
                WHERE NOT next:Placeholder AND NOT next IN partial.nodes
                WITH DISTINCT partial, next,
                     next.device_id + '/' + toLower(c.proto) + '/' + toString(c.dst_port) IN $vulnerable AS vulnerable
                RETURN {nodes: partial.nodes + next, cost: partial.cost + CASE WHEN vulnerable THEN 0.5 ELSE 1.0 END}
              })] |
           // A hop with a vulnerable and a plain relationship yields both costs; only the cheaper one stays.
           // (An EXISTS or pattern comprehension over the hop here fails in Neo4j 5.26 with an internal null error.)
           [x IN [CASE WHEN size($vulnerable) = 0 THEN extended
                       ELSE [p IN extended WHERE NOT any(o IN extended WHERE o.nodes = p.nodes AND o.cost < p.cost)]
                  END] | {
           done: state.done + [p IN x WHERE last(p.nodes).device_id IN $target_ids],
           open: [p IN x WHERE hop < $max_hops AND last(p.nodes) IN reach[$max_hops - hop]]
         }][0]])
       ).done AS complete
  UNWIND complete AS found
  WITH [n IN found.nodes | coalesce(n.device_id, n.address)] AS ids, found.cost AS cost
  WITH ids, cost, size(ids) - 1 AS hops
  ORDER BY cost, hops, ids
  WITH head(ids) AS entry_id, last(ids) AS target_id, collect({ids: ids, cost: cost, hops: hops}) AS ranked
  UNWIND ranked[..$k] AS found
  WITH found
  ORDER BY found.cost, found.hops, found.ids
  LIMIT $max_paths
  RETURN 'observed' AS mode, found.ids AS ids, found.cost AS cost, found.hops AS hops
  UNION ALL
  // Permitted mode: the caller's paths, already cut to $k per (entry, target) pair and $max_paths in total.
  UNWIND CASE WHEN 'permitted' IN $modes THEN $permitted_paths ELSE [] END AS found
  RETURN 'permitted' AS mode, found.ids AS ids, found.cost AS cost, found.hops AS hops
}
WITH mode, {ids: ids, cost: cost, hops: hops} AS found
CALL (found) {
  UNWIND found.ids AS node_id
  OPTIONAL MATCH (d:Device {site: $site, device_id: node_id})
  RETURN collect(coalesce(CASE WHEN d.hostname <> '' THEN d.hostname END,
                          CASE WHEN head(d.ips) <> '' THEN head(d.ips) END, node_id)) AS names
}
OPTIONAL MATCH (entry:Device {site: $site, device_id: head(found.ids)})
OPTIONAL MATCH (target:Device {site: $site, device_id: last(found.ids)})
WITH mode, found, names,
     CASE WHEN entry.hostname <> '' THEN entry.hostname END AS entry_hostname,
     CASE WHEN target.hostname <> '' THEN target.hostname END AS target_hostname,
     coalesce(target.device_class, 'unknown') AS target_class,
     CASE coalesce(target.criticality, 'low')
       WHEN 'life_critical' THEN 0 WHEN 'high' THEN 1 WHEN 'medium' THEN 2 ELSE 3
     END + CASE WHEN mode = 'permitted' THEN 1 ELSE 0 END AS level
ORDER BY mode, found.cost, found.hops, found.ids
// Number the paths per mode from one ordered list, which the last UNWIND streams out in order. Sorting the
// numbered rows again would buffer every row together with the list it came from.
WITH mode, collect({found: found, names: names, entry_hostname: entry_hostname, target_hostname: target_hostname,
                    target_class: target_class, level: level}) AS paths
ORDER BY mode
UNWIND range(0, size(paths) - 1) AS number
WITH mode, number, paths[number] AS row
WITH mode, number, row.found AS found, row.names AS names, row
RETURN mode,
       mode + '-' + substring('00000', size(toString(number + 1))) + toString(number + 1) AS path_id,
       head(found.ids) AS entry_id,
       row.entry_hostname AS entry_hostname,
       last(found.ids) AS target_id,
       row.target_hostname AS target_hostname,
       row.target_class AS target_class,
       found.hops AS hops,
       found.cost AS cost,
       found.ids AS path,
       names AS path_hostnames,
       ['critical', 'high', 'medium', 'low', 'info'][row.level] AS severity,
       reduce(text = head(names), name IN tail(names) | text + ' -> ' + name) + ': ' + toString(found.hops)
         + CASE WHEN found.hops = 1 THEN ' hop' ELSE ' hops' END + ', cost '
         + CASE WHEN found.cost = toInteger(found.cost) THEN toString(toInteger(found.cost)) ELSE toString(found.cost) END
         + ', over ' + CASE mode WHEN 'observed' THEN 'observed communications' ELSE 'services the policy permits' END
         AS evidence
LIMIT 200000
