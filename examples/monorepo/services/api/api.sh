#!/bin/sh
echo "api on shared base $(cat /opt/shared/VERSION)"
