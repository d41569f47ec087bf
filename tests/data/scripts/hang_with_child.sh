#!/bin/sh
# A plugin that hangs: it starts a child that holds stdout open, writes "<own pid> <child pid>" to the
# file named by $1 (atomically), prints a line, then waits forever.
sleep 300 &
echo "$$ $!" > "$1.tmp" && mv "$1.tmp" "$1"
echo "still thinking"
wait
