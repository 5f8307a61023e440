#!/bin/bash
# Prints what a process in the container sees of itself.
echo "user=$(id -un) home=$HOME cwd=$(pwd)"
echo "pid1=$(ps -o comm= -p 1)"
echo "links=$(ip -o link | awk -F': ' '{print $2}' | tr '\n' ' ')"
