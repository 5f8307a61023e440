#!/bin/sh
# Runs inside the build stage: prints facts only that stage can know.
. /etc/os-release
echo "built on $PRETTY_NAME"
echo "applets: $(ls /bin | wc -l)"
