"""Message helpers: sentence case of composed messages."""

from vmimport.messages import sentence_case


def test_sentence_case_capitalises_each_sentence_start():
    assert sentence_case("no UEFI boot. the disk boots with legacy-bios. ok") == \
        "No UEFI boot. The disk boots with legacy-bios. Ok"
    # Dots inside words, names and versions are left as they are.
    assert sentence_case("Read disk.raw from EFI/BOOT/BOOTX64.EFI, kernel 5.15.0") == \
        "Read disk.raw from EFI/BOOT/BOOTX64.EFI, kernel 5.15.0"
