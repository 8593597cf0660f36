"""Alerts that reach people: a real Alertmanager (Debian's, from ``scripts/ensure-alertmanager.sh``) runs the
routing of deploy/compose/alertmanager/alertmanager.yml and delivers antrian's alerts to a local webhook receiver
that stands in for Slack and Discord. The offline checks of the routing (amtool, the AlertmanagerConfig's CRD
schema, compose and Kubernetes agreeing) are in tests/deploy/test_alertmanager.py; :mod:`.routing` serves both."""
