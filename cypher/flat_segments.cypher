// name: flat_segments
// category: segmentation
// description: Segments that hold both medical devices and general IT devices, with the count of each. A device is medical or IT by its role, or by its class ($medical_classes, $it_classes) when the role is empty.
// parameters: $site, $medical_classes, $it_classes
// limits: no paths; LIMIT 100000 rows
// cannot see: devices without a segment; host firewalls or private VLANs inside a segment
// revision: 2
MATCH (d:Device {site: $site})-[:IN_SEGMENT]->(s:Segment {site: $site})
WITH s, d, coalesce(d.device_class, 'unknown') AS device_class,
     CASE
       WHEN d.role IS NOT NULL THEN d.role
       WHEN coalesce(d.device_class, 'unknown') IN $medical_classes THEN 'medical'
       WHEN coalesce(d.device_class, 'unknown') IN $it_classes THEN 'it'
       ELSE 'other'
     END AS kind
ORDER BY device_class
WITH s,
     sum(CASE WHEN kind = 'medical' THEN 1 ELSE 0 END) AS medical_devices,
     sum(CASE WHEN kind = 'it' THEN 1 ELSE 0 END) AS it_devices,
     count(d) AS members,
     collect(DISTINCT CASE WHEN kind = 'medical' THEN device_class END) AS medical_classes,
     collect(DISTINCT CASE WHEN kind = 'it' THEN device_class END) AS it_classes,
     sum(CASE WHEN kind = 'medical' AND d.criticality = 'life_critical' THEN 1 ELSE 0 END) AS life_critical
WHERE medical_devices > 0 AND it_devices > 0
RETURN s.segment_id AS segment_id,
       coalesce(s.zone, 'unassigned') AS zone,
       medical_devices,
       it_devices,
       members - medical_devices - it_devices AS other_devices,
       medical_classes,
       it_classes,
       CASE
         WHEN life_critical > 0 AND it_devices >= medical_devices THEN 'critical'
         WHEN life_critical > 0 THEN 'high'
         ELSE 'medium'
       END AS severity,
       toString(medical_devices) + ' medical ('
         + reduce(text = head(medical_classes), c IN tail(medical_classes) | text + ', ' + c) + ') and '
         + toString(it_devices) + ' IT ('
         + reduce(text = head(it_classes), c IN tail(it_classes) | text + ', ' + c) + ') devices share segment '
         + s.segment_id AS evidence
ORDER BY segment_id
LIMIT 100000
