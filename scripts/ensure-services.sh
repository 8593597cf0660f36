#!/usr/bin/env bash
# Start PostgreSQL and RabbitMQ on this machine when they are down, and wait until both answer.
set -euo pipefail

port_open() { timeout 1 bash -c "</dev/tcp/127.0.0.1/$1" 2>/dev/null; }

if ! port_open 5432; then
  echo "ensure-services: starting PostgreSQL"
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n 1)" main start
fi
for _ in $(seq 1 60); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 0.5; done
pg_isready -q -h 127.0.0.1 -p 5432 || { echo "ensure-services: PostgreSQL did not come up on 127.0.0.1:5432" >&2; exit 1; }

if ! port_open 5672; then
  echo "ensure-services: starting RabbitMQ"
  rabbitmq-server -detached
  rabbitmqctl await_startup --timeout 120 >/dev/null
fi
for _ in $(seq 1 120); do port_open 5672 && break; sleep 0.5; done
port_open 5672 || { echo "ensure-services: RabbitMQ did not come up on 127.0.0.1:5672" >&2; exit 1; }

# The management API gives `antrian queues` and /api/queues their unacknowledged counts and rates.
if ! rabbitmq-plugins list --enabled --minimal 2>/dev/null | grep -qx rabbitmq_management; then
  echo "ensure-services: enabling RabbitMQ's management plugin"
  rabbitmq-plugins enable rabbitmq_management >/dev/null
fi
for _ in $(seq 1 60); do port_open 15672 && break; sleep 0.5; done
port_open 15672 || echo "ensure-services: RabbitMQ's management API is not up on 127.0.0.1:15672" >&2
