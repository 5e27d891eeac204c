// Package units formats sizes and versions the way pitr prints them to people.
package units

import "fmt"

// Bytes renders n in binary units: 512 B, 1.5 KiB, 16.0 MiB.
func Bytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

// PGVersion renders server_version_num (150018) as PostgreSQL prints it (15.18).
func PGVersion(num int) string {
	if num <= 0 {
		return "unknown"
	}
	return fmt.Sprintf("%d.%d", num/10000, num%10000)
}
