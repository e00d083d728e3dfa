"""What the boot check makes of a console (boot_check._judge/_last_seen), without QEMU: the
end-to-end cases are tests/api/test_boot_check.py."""

from vmimport.pipeline.boot_check import _clean, _judge, _last_seen


def test_init_reached_by_the_usual_announcements():
    assert _judge("[ 1.2] Run /sbin/init as init process\n")[0] == \
        "the kernel started /sbin/init"
    assert _judge("Welcome to Debian GNU/Linux 12 (bookworm)!\n")[0] == "systemd started"
    assert _judge("web01 login: ")[0] == "a login prompt"


def test_grub_banner_is_not_systemd():
    assert _judge("Welcome to GRUB!\n") == (None, None)


def test_dead_ends_and_what_was_seen_before_them():
    console = _clean(b"\x1b[2JSYSLINUX 6.04\r\nALERT! /dev/sda9 does not exist.\r\n"
                     b"[ 8.3] Kernel panic - not syncing: Attempted to kill init!\r\n"
                     b"[ 8.4]  dump_stack_lvl+0x44/0x5c\r\n")
    assert _judge(console) == (None, "kernel panic: Attempted to kill init!")
    seen = _last_seen(console)
    assert "ALERT! /dev/sda9 does not exist." in seen and "dump_stack" not in seen
    assert _judge("error: file `/boot/grub/i386-pc/normal.mod' not found.\ngrub rescue> ")[1] \
        == "GRUB rescue prompt"


def test_an_initramfs_shell_is_a_dead_end():
    console = "ALERT!  UUID=0a1b does not exist.  Dropping to a shell!\n(initramfs) "
    assert _judge(console)[1].startswith("the initramfs gave up")
    assert "ALERT!  UUID=0a1b does not exist." in _last_seen(console)
