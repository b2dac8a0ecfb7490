// name: misplaced_devices
// category: segmentation
// description: Devices whose device_class is not in the designated_classes of their segment; a segment with an empty list accepts every class. A device without a role counts as medical when its class is in $medical_classes, as the Python form fills the role from the class.
// parameters: $site, $medical_classes, $exposed_zones, $clinical_zones
// limits: no paths; LIMIT 100000 rows
// cannot see: devices without a segment; misclassified devices are judged by their wrong class
// revision: 2
MATCH (d:Device {site: $site})-[:IN_SEGMENT]->(s:Segment {site: $site})
WHERE size(coalesce(s.designated_classes, [])) > 0
  AND NOT coalesce(d.device_class, 'unknown') IN s.designated_classes
WITH d, s,
     coalesce(d.device_class, 'unknown') AS device_class,
     coalesce(d.criticality, 'low') AS criticality,
     coalesce(s.zone, 'unassigned') AS zone,
     CASE WHEN d.hostname <> '' THEN d.hostname END AS hostname
WITH d, s, device_class, criticality, zone, hostname,
     coalesce(d.role = 'medical', d.role IS NULL AND device_class IN $medical_classes) AS medical,
     coalesce(hostname, CASE WHEN head(d.ips) <> '' THEN head(d.ips) END, d.device_id) AS label,
     reduce(text = head(s.designated_classes), c IN tail(s.designated_classes) | text + ', ' + c) AS designated_text
RETURN d.device_id AS device_id,
       hostname,
       head(d.ips) AS ip,
       device_class,
       s.segment_id AS segment_id,
       zone,
       s.designated_classes AS designated_classes,
       CASE
         WHEN device_class = 'unknown' THEN 'info'
         WHEN medical AND (zone IN $exposed_zones OR s.trust = 'untrusted') THEN 'critical'
         WHEN medical AND NOT zone IN $clinical_zones THEN 'high'
         WHEN criticality = 'life_critical' THEN 'high'
         WHEN criticality = 'high' OR (NOT medical AND zone IN $clinical_zones) THEN 'medium'
         ELSE 'low'
       END AS severity,
       label + ' (' + device_class + ') is in segment ' + s.segment_id + ' (zone ' + zone
         + '), which is designated for ' + designated_text AS evidence
ORDER BY segment_id, device_id
LIMIT 100000
