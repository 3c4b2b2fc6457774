# Shared by the maintainer scripts; packaging/build-deb puts it where a
# script has the line "#LIB#".

# The names of the users whose systemd user manager runs now (one
# user@UID.service each), one a line; nothing where systemd does not run.
users_with_a_manager() {
	systemctl list-units --type=service --state=running --no-legend --plain 'user@*.service' 2>/dev/null |
		sed -n 's/^user@\([0-9][0-9]*\)\.service.*/\1/p' |
		while read -r uid; do getent passwd "$uid" | cut -d: -f1; done
}

# Run `systemctl --user ARGS…` in the manager of each of those users.
for_each_user_manager() {
	for user in $(users_with_a_manager); do
		systemctl --user --machine="$user@" "$@" || true
	done
}
