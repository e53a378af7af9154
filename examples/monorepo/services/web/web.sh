#!/bin/sh
echo "web on shared base $(cat /opt/shared/VERSION)"
