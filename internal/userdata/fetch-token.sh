#!/bin/bash
# tunnelward-fetch-token: installed by tunnelward user-data, run by systemd as
# ExecStartPre of cloudflared.service (so every start, including the restart
# remediation sends, picks up a rotated token).
#
# Reads the tunnel token from SSM Parameter Store with the instance role
# (IMDSv2 for region and credentials), retrying with backoff until SSM
# answers, and writes it to a root-only environment file for cloudflared.
# It never prints the token. Do not add `set -x` here.
set -euo pipefail
umask 077

# TUNNEL_TOKEN_PARAMETER, TOKEN_ENV_FILE, FETCH_MAX_WAIT_SECONDS
# shellcheck source=/dev/null
. /etc/tunnelward/tunnel.conf

log() { printf 'tunnelward-fetch-token: %s\n' "$*" >&2; }

imds() {
	local tok
	tok=$(curl -fsS --max-time 5 -X PUT \
		-H 'X-aws-ec2-metadata-token-ttl-seconds: 300' \
		http://169.254.169.254/latest/api/token) || return 1
	curl -fsS --max-time 5 -H "X-aws-ec2-metadata-token: ${tok}" \
		"http://169.254.169.254/latest/$1"
}

# backoff sleeps 2, 4, 8 ... 60 s with jitter, and fails once the deadline
# has passed.
deadline=$((SECONDS + FETCH_MAX_WAIT_SECONDS))
delay=2
backoff() {
	if ((SECONDS >= deadline)); then
		log "giving up after ${FETCH_MAX_WAIT_SECONDS}s: $1"
		exit 1
	fi
	log "$1; retrying in about ${delay}s"
	sleep $((delay + RANDOM % delay))
	delay=$((delay * 2 > 60 ? 60 : delay * 2))
}

command -v aws >/dev/null 2>&1 || {
	log "aws CLI not found; the AMI must provide it"
	exit 1
}

region=""
until region=$(imds meta-data/placement/region) && [[ -n "${region}" ]]; do
	backoff "instance metadata (IMDSv2) did not answer"
done

delay=2
token=""
until token=$(aws ssm get-parameter --region "${region}" \
	--name "${TUNNEL_TOKEN_PARAMETER}" --with-decryption \
	--query Parameter.Value --output text) &&
	[[ -n "${token}" && "${token}" != "None" ]]; do
	backoff "ssm get-parameter ${TUNNEL_TOKEN_PARAMETER} failed"
done

mkdir -p "$(dirname "${TOKEN_ENV_FILE}")"
tmp=$(mktemp "${TOKEN_ENV_FILE}.XXXXXX")
printf 'TUNNEL_TOKEN=%s\n' "${token}" >"${tmp}"
unset token
chmod 0600 "${tmp}"
chown root:root "${tmp}"
mv -f "${tmp}" "${TOKEN_ENV_FILE}"
log "token from ${TUNNEL_TOKEN_PARAMETER} written to ${TOKEN_ENV_FILE} (root only)"
