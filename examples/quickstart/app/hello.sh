#!/bin/sh
# The quickstart's "application": prints the greeting baked into the image.
cat /etc/greeting
