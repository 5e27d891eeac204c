package wal

import "fmt"

// FileKind is the kind of file PostgreSQL hands to archive_command or asks
// restore_command for.
type FileKind int

const (
	KindSegment         FileKind = iota + 1 // TTTTTTTTXXXXXXXXYYYYYYYY
	KindPartial                             // segment name + ".partial"
	KindBackupHistory                       // segment name + ".OOOOOOOO.backup"
	KindTimelineHistory                     // TTTTTTTT.history
)

func (k FileKind) String() string {
	switch k {
	case KindSegment:
		return "WAL segment"
	case KindPartial:
		return "partial WAL segment"
	case KindBackupHistory:
		return "backup history file"
	case KindTimelineHistory:
		return "timeline history file"
	}
	return fmt.Sprintf("FileKind(%d)", int(k))
}

const (
	partialSuffix = ".partial"
	backupSuffix  = ".backup"
	historySuffix = ".history"

	segmentNameLen = 24
	backupNameLen  = segmentNameLen + 1 + 8 + len(backupSuffix)
)

// Classify accepts only the exact shapes PostgreSQL produces. The name is
// later used as an object key and a local path, so anything looser (a slash,
// "..", a compression suffix, lower-case hex that would alias an upper-case
// object) is refused here rather than trusted downstream. Timeline 0 is also
// refused since PostgreSQL never creates it. Whether the low 8 digits fit the
// segment size is not checked: that needs the size, see ParseFileName.
func Classify(name string) (FileKind, error) {
	kind := classify(name)
	if kind == 0 {
		return 0, fmt.Errorf("%q is not a WAL archive file name: want 24 upper-case hex digits, optionally followed by %q or \".XXXXXXXX%s\", or XXXXXXXX%s",
			name, partialSuffix, backupSuffix, historySuffix)
	}
	if name[:8] == "00000000" {
		return 0, fmt.Errorf("%q is not a WAL archive file name: timeline 00000000 does not exist", name)
	}
	return kind, nil
}

func classify(name string) FileKind {
	switch {
	case len(name) == segmentNameLen && isUpperHex(name):
		return KindSegment
	case len(name) == segmentNameLen+len(partialSuffix) &&
		isUpperHex(name[:segmentNameLen]) && name[segmentNameLen:] == partialSuffix:
		return KindPartial
	case len(name) == backupNameLen && isUpperHex(name[:segmentNameLen]) &&
		name[segmentNameLen] == '.' && isUpperHex(name[segmentNameLen+1:segmentNameLen+9]) &&
		name[segmentNameLen+9:] == backupSuffix:
		return KindBackupHistory
	case len(name) == 8+len(historySuffix) && isUpperHex(name[:8]) && name[8:] == historySuffix:
		return KindTimelineHistory
	}
	return 0
}

// SegmentPrefix returns the segment name a segment, .partial or .backup file
// is named after, which is what ordering and cleanup decisions are based on.
func SegmentPrefix(name string) (string, error) {
	kind, err := Classify(name)
	if err != nil {
		return "", err
	}
	if kind == KindTimelineHistory {
		return "", fmt.Errorf("%q is a %s and has no segment name", name, kind)
	}
	return name[:segmentNameLen], nil
}

// TimelineOfName returns the timeline a valid archive file name belongs to.
func TimelineOfName(name string) (TimelineID, error) {
	if _, err := Classify(name); err != nil {
		return 0, err
	}
	return ParseTimelineID(name[:8])
}

// HistoryFileName is TLHistoryFileName.
func HistoryFileName(tli TimelineID) string {
	return fmt.Sprintf("%08X%s", uint32(tli), historySuffix)
}

// PartialFileName is the name PostgreSQL archives the last, incomplete segment
// of an old timeline under.
func (s SegmentSize) PartialFileName(seg Segment) string {
	return s.FileName(seg) + partialSuffix
}

// BackupHistoryFileName is BackupHistoryFileName: the start segment on tli
// plus the offset of start inside it, so it sorts right after that segment.
func (s SegmentSize) BackupHistoryFileName(tli TimelineID, start LSN) string {
	seg := Segment{TLI: tli, No: s.SegmentOf(start)}
	return fmt.Sprintf("%s.%08X%s", s.FileName(seg), uint32(s.Offset(start)), backupSuffix)
}
