"""A network lab built from Linux network namespaces, for tests that send real packets.

:mod:`tests.lab.netns` builds the lab (hosts joined by veth pairs to a bridge
in a switch namespace) and runs programs and tcpdump captures inside it,
:mod:`tests.lab.services` starts small TCP and UDP services in lab hosts, and
:mod:`tests.lab.pcap` reads the captures. Building the lab needs root and the
``ip`` command; :func:`tests.lab.netns.lab_unavailable` says why it cannot run.
"""
