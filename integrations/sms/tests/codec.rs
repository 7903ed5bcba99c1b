//! Byte-exact CMPP 2.0 PDUs.
//!
//! Every expected byte string below was worked out field by field from the CMPP 2.0 field tables
//! (field widths, NUL padding, big-endian integers). The MD5 authenticators were computed
//! independently with Python's hashlib and pasted as literals:
//!   hashlib.md5(b"901234" + b"\0"*9 + b"secret" + b"1128183000").hexdigest()
//!     == "781e31ca6ece2d85b3e5b61a570397c2"
//!   hashlib.md5(b"\x00" + bytes.fromhex("781e31ca…97c2") + b"secret").hexdigest()
//!     == "78fe1299941170b444a53b0c323c9517"
#![allow(clippy::unwrap_used)]

use civichub_sms::*;

/// Hex pieces (one per field) to bytes.
fn hex(parts: &[&str]) -> Vec<u8> {
    let s: String = parts.concat();
    assert!(s.len().is_multiple_of(2), "odd hex");
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn decode_one(bytes: &[u8]) -> Frame {
    let (frame, used) = decode_frame(bytes).unwrap().expect("complete PDU");
    assert_eq!(used, bytes.len());
    frame
}

const NUL21: &str = "000000000000000000000000000000000000000000";
const NUL17: &str = "0000000000000000000000000000000000";
const SRC_ID_10690012345: &str = "313036393030313233343500000000000000000000";
const MOBILE_13800138000: &str = "313338303031333830303000000000000000000000";
const SERVICE_CIVIC: &str = "43495649430000000000";

#[test]
fn connect_is_byte_exact() {
    let expected = hex(&[
        "00000027",                         // Total_Length 39
        "00000001",                         // Command_Id CONNECT
        "00000001",                         // Sequence_Id
        "393031323334",                     // Source_Addr "901234"
        "781e31ca6ece2d85b3e5b61a570397c2", // AuthenticatorSource (Python hashlib)
        "20",                               // Version 2.0
        "433eb4d8",                         // Timestamp 1128183000 (11-28 18:30:00)
    ]);
    let frame = Frame::new(
        1,
        Pdu::Connect(Connect::new("901234", "secret", 1_128_183_000)),
    );
    assert_eq!(frame.encode().unwrap(), expected);
    let back = decode_one(&expected);
    assert_eq!(back, frame);
    let Pdu::Connect(c) = back.pdu else { panic!() };
    assert!(c.verify("secret"));
    assert!(!c.verify("wrong"));
}

#[test]
fn connect_resp_is_byte_exact() {
    let expected = hex(&[
        "0000001e", // Total_Length 30
        "80000001", // CONNECT_RESP
        "00000001",
        "00",                               // Status ok
        "78fe1299941170b444a53b0c323c9517", // AuthenticatorISMG (Python hashlib)
        "20",                               // Version
    ]);
    let connect = Connect::new("901234", "secret", 1_128_183_000);
    let resp = ConnectResp::new(0, &connect, "secret");
    let frame = Frame::new(1, Pdu::ConnectResp(resp.clone()));
    assert_eq!(frame.encode().unwrap(), expected);
    assert_eq!(decode_one(&expected), frame);
    assert!(resp.verify(&connect.authenticator_source, "secret"));
    assert!(!resp.verify(&connect.authenticator_source, "other"));
}

/// The SUBMIT fields this crate's client fills, for one destination.
fn submit_head(
    pk_total: &'static str,
    pk_number: &'static str,
    udhi: &'static str,
) -> Vec<&'static str> {
    vec![
        "0000000000000000", // Msg_Id
        pk_total,           // Pk_total
        pk_number,          // Pk_number
        "01",               // Registered_Delivery
        "00",               // Msg_level
        SERVICE_CIVIC,      // Service_Id "CIVIC" (10)
        "02",               // Fee_UserType: SP pays
        NUL21,              // Fee_terminal_Id (21)
        "00",               // TP_pId
        udhi,               // TP_udhi
        "08",               // Msg_Fmt UCS-2
        "393031323334",     // Msg_src "901234"
        "3031",             // FeeType "01"
        "303030303030",     // FeeCode "000000"
        NUL17,              // ValId_Time (17)
        NUL17,              // At_Time (17)
        SRC_ID_10690012345, // Src_Id (21)
        "01",               // DestUsr_tl
        MOBILE_13800138000, // Dest_terminal_Id (21)
    ]
}

fn client_submit(seg: &Segment) -> Submit {
    Submit {
        pk_total: seg.pk_total,
        pk_number: seg.pk_number,
        registered_delivery: 1,
        service_id: "CIVIC".into(),
        fee_user_type: 2,
        tp_udhi: seg.tp_udhi,
        msg_fmt: seg.msg_fmt,
        msg_src: "901234".into(),
        fee_type: "01".into(),
        fee_code: "000000".into(),
        src_id: "10690012345".into(),
        dest_terminal_ids: vec!["13800138000".into()],
        msg_content: seg.content.clone(),
        ..Submit::default()
    }
}

#[test]
fn submit_with_one_chinese_segment_is_byte_exact() {
    let mut parts = vec![
        "000000af", // Total_Length 175 = 12 + 117 fixed + 21 dest + 1 + 16 content + 8
        "00000004", // SUBMIT
        "00000002",
    ];
    parts.extend(submit_head("01", "01", "00"));
    parts.extend([
        "10",                               // Msg_Length 16
        "60a8597dff0c00310032003300340035", // "您好，12345" in UTF-16BE
        "0000000000000000",                 // Reserve
    ]);
    let expected = hex(&parts);
    let segs = split_message("您好，12345", 0).unwrap();
    assert_eq!(segs.len(), 1);
    let frame = Frame::new(2, Pdu::Submit(client_submit(&segs[0])));
    assert_eq!(frame.encode().unwrap(), expected);
    assert_eq!(decode_one(&expected), frame);
}

#[test]
fn two_segment_long_submit_is_byte_exact() {
    // 75 characters = 150 octets of UCS-2: 134 octets in part 1, 16 in part 2.
    let text = "市民您好，您反映的问题已受理。".repeat(5);
    let segs = split_message(&text, 0x2a).unwrap();
    assert_eq!(segs.len(), 2);

    let mut first = vec!["0000012b", "00000004", "00000003"]; // 299 octets
    first.extend(submit_head("02", "01", "01"));
    first.extend([
        "8c",           // Msg_Length 140
        "0500032a0201", // UDH: IEI 00, length 3, reference 0x2a, 2 parts, part 1
        "5e026c1160a8597dff0c60a853cd6620768495ee98985df253d7740630025e026c1160a8597dff0c60a853cd",
        "6620768495ee98985df253d7740630025e026c1160a8597dff0c60a853cd6620768495ee98985df253d77406",
        "30025e026c1160a8597dff0c60a853cd6620768495ee98985df253d7740630025e026c1160a8597dff0c60a8",
        "53cd",
        "0000000000000000", // Reserve
    ]);
    let mut second = vec!["000000b5", "00000004", "00000004"]; // 181 octets
    second.extend(submit_head("02", "02", "01"));
    second.extend([
        "16",                               // Msg_Length 22
        "0500032a0202",                     // UDH part 2 of 2
        "6620768495ee98985df253d774063002", // "映的问题已受理。"
        "0000000000000000",
    ]);
    let f1 = Frame::new(3, Pdu::Submit(client_submit(&segs[0])));
    let f2 = Frame::new(4, Pdu::Submit(client_submit(&segs[1])));
    assert_eq!(f1.encode().unwrap(), hex(&first));
    assert_eq!(f2.encode().unwrap(), hex(&second));

    // Both PDUs arriving in one read decode one after the other.
    let mut stream = hex(&first);
    stream.extend(hex(&second));
    let mut dec = FrameDecoder::new();
    dec.extend(&stream);
    let Some(Decoded::Frame(a)) = dec.next_pdu().unwrap() else {
        panic!()
    };
    let Some(Decoded::Frame(b)) = dec.next_pdu().unwrap() else {
        panic!()
    };
    assert!(dec.next_pdu().unwrap().is_none());
    assert_eq!((a, b), (f1, f2));

    let mut r = Reassembler::default();
    assert_eq!(r.push("x", 8, 1, &segs[1].content).unwrap(), None);
    assert_eq!(r.push("x", 8, 1, &segs[0].content).unwrap(), Some(text));
}

#[test]
fn submit_resp_and_deliver_resp_are_byte_exact() {
    let resp = MsgResp {
        msg_id: 0x1122_3344_5566_7788,
        result: 0,
    };
    let submit_resp = hex(&["00000015", "80000004", "00000002", "1122334455667788", "00"]);
    assert_eq!(
        Frame::new(2, Pdu::SubmitResp(resp)).encode().unwrap(),
        submit_resp
    );
    assert_eq!(decode_one(&submit_resp).pdu, Pdu::SubmitResp(resp));
    let deliver_resp = hex(&["00000015", "80000005", "00000009", "1122334455667788", "00"]);
    assert_eq!(
        Frame::new(9, Pdu::DeliverResp(resp)).encode().unwrap(),
        deliver_resp
    );
    assert_eq!(format_msg_id(resp.msg_id), "1234605616436508552");
    assert_eq!(parse_msg_id("1234605616436508552"), Some(resp.msg_id));
}

#[test]
fn deliver_status_report_decodes() {
    let bytes = hex(&[
        "00000091", // Total_Length 145 = 12 + 65 + 60 + 8
        "00000005", // DELIVER
        "00000009",
        "1122334455667788",     // Msg_Id of this DELIVER
        SRC_ID_10690012345,     // Dest_Id
        SERVICE_CIVIC,          // Service_Id
        "00",                   // TP_pid
        "00",                   // TP_udhi
        "00",                   // Msg_Fmt
        MOBILE_13800138000,     // Src_terminal_Id
        "01",                   // Registered_Delivery: status report
        "3c",                   // Msg_Length 60
        "0102030405060708",     //   Msg_Id of the SUBMIT
        "44454c49565244",       //   Stat DELIVRD
        "32343131323831383330", // Submit_time 2411281830
        "32343131323831383331", // Done_time 2411281831
        MOBILE_13800138000,     // Dest_terminal_Id
        "00000007",             // SMSC_sequence
        "0000000000000000",     // Reserve
    ]);
    let frame = decode_one(&bytes);
    assert_eq!(frame.sequence_id, 9);
    let Pdu::Deliver(d) = &frame.pdu else {
        panic!("{frame:?}")
    };
    assert!(d.is_report());
    assert_eq!(d.src_terminal_id, "13800138000");
    assert_eq!(d.dest_id, "10690012345");
    let report = d.report().unwrap();
    assert_eq!(
        report,
        StatusReport {
            msg_id: 0x0102_0304_0506_0708,
            stat: "DELIVRD".into(),
            submit_time: "2411281830".into(),
            done_time: "2411281831".into(),
            dest_terminal_id: "13800138000".into(),
            smsc_sequence: 7,
        }
    );
    assert!(report.delivered());
    assert_eq!(frame.encode().unwrap(), bytes);
}

#[test]
fn deliver_mo_decodes() {
    let bytes = hex(&[
        "0000005d", // Total_Length 93 = 12 + 65 + 8 + 8
        "00000005",
        "0000000a",
        "1122334455667788",
        SRC_ID_10690012345, // Dest_Id: our service number
        SERVICE_CIVIC,
        "00",
        "00",                                         // TP_udhi
        "08",                                         // Msg_Fmt UCS-2
        "313339303031333930303000000000000000000000", // Src_terminal_Id 13900139000
        "00",                                         // Registered_Delivery: MO
        "08",                                         // Msg_Length
        "67e58be28fdb5ea6",                           // "查询进度"
        "0000000000000000",
    ]);
    let frame = decode_one(&bytes);
    let Pdu::Deliver(d) = &frame.pdu else {
        panic!()
    };
    assert!(!d.is_report());
    assert_eq!(d.src_terminal_id, "13900139000");
    assert_eq!(decode_text(d.msg_fmt, &d.msg_content), "查询进度");
    assert_eq!(frame.encode().unwrap(), bytes);
}

#[test]
fn active_test_and_terminate_are_byte_exact() {
    let cases = [
        (Frame::new(5, Pdu::ActiveTest), "0000000c0000000800000005"),
        (
            Frame::new(5, Pdu::ActiveTestResp),
            "0000000d800000080000000500",
        ),
        (Frame::new(6, Pdu::Terminate), "0000000c0000000200000006"),
        (
            Frame::new(6, Pdu::TerminateResp),
            "0000000c8000000200000006",
        ),
    ];
    for (frame, bytes) in cases {
        assert_eq!(frame.encode().unwrap(), hex(&[bytes]));
        assert_eq!(decode_one(&hex(&[bytes])), frame);
    }
    // ACTIVE_TEST_RESP without its Reserved octet is tolerated.
    assert_eq!(
        decode_one(&hex(&["0000000c8000000800000005"])).pdu,
        Pdu::ActiveTestResp
    );
}

#[test]
fn streaming_decoder_needs_more_bytes_then_yields() {
    let bytes = hex(&["0000000d800000080000000500"]);
    let mut dec = FrameDecoder::new();
    for (i, b) in bytes.iter().enumerate() {
        assert!(
            dec.next_pdu().unwrap().is_none(),
            "complete after {i} bytes?"
        );
        dec.extend(&[*b]);
    }
    assert!(matches!(dec.next_pdu().unwrap(), Some(Decoded::Frame(_))));
    assert_eq!(dec.buffered(), 0);
    assert!(decode_frame(&bytes[..5]).unwrap().is_none());
    assert!(decode_frame(&bytes[..12]).unwrap().is_none());
}

#[test]
fn bad_lengths_are_framing_errors() {
    for header in [
        "0000000b0000000800000001",
        "ffffffff0000000800000001",
        "0000100100000004000000ff",
    ] {
        assert!(matches!(
            decode_frame(&hex(&[header])),
            Err(Error::InvalidLength(_))
        ));
        let mut dec = FrameDecoder::new();
        dec.extend(&hex(&[header]));
        assert!(matches!(dec.next_pdu(), Err(Error::InvalidLength(_))));
    }
}

#[test]
fn malformed_bodies_are_skipped() {
    // A SUBMIT_RESP with a 5-octet body, then a good ACTIVE_TEST.
    let mut bytes = hex(&["00000011", "80000004", "00000007", "1122334455"]);
    bytes.extend(hex(&["0000000c0000000800000008"]));
    assert!(matches!(
        decode_frame(&bytes),
        Err(Error::Truncated("Msg_Id"))
    ));
    let mut dec = FrameDecoder::new();
    dec.extend(&bytes);
    match dec.next_pdu().unwrap() {
        Some(Decoded::Malformed(bad)) => {
            assert_eq!(bad.command_id, command::SUBMIT_RESP);
            assert_eq!(bad.sequence_id, 7);
            assert_eq!(bad.msg_id, None, "five octets hold no Msg_Id");
        }
        other => panic!("{other:?}"),
    }
    let Some(Decoded::Frame(f)) = dec.next_pdu().unwrap() else {
        panic!()
    };
    assert_eq!(f.pdu, Pdu::ActiveTest);
    // A DELIVER cut short after its Msg_Id: the id is kept, for the DELIVER_RESP.
    let mut dec = FrameDecoder::new();
    dec.extend(&hex(&["00000016", "00000005", "00000009", "0102030405060708", "1122"]));
    match dec.next_pdu().unwrap() {
        Some(Decoded::Malformed(bad)) => assert_eq!((bad.command_id, bad.msg_id), (command::DELIVER, Some(0x0102030405060708))),
        other => panic!("{other:?}"),
    }

    // Trailing bytes after the last field, a body on ACTIVE_TEST, a Msg_Length past the end.
    let trailing = hex(&[
        "00000016",
        "80000004",
        "00000001",
        "1122334455667788",
        "00",
        "ff",
    ]);
    assert!(matches!(decode_frame(&trailing), Err(Error::Malformed(_))));
    let active_with_body = hex(&["0000000d", "00000008", "00000001", "00"]);
    assert!(matches!(
        decode_frame(&active_with_body),
        Err(Error::Malformed(_))
    ));
    let mut deliver = hex(&["00000055", "00000005", "00000001", "1122334455667788"]);
    deliver.extend(vec![0u8; 21 + 10 + 3 + 21 + 1]);
    deliver.push(200); // Msg_Length 200, but only 8 octets follow
    deliver.extend([0u8; 8]);
    assert_eq!(deliver.len(), 0x55);
    assert!(matches!(
        decode_frame(&deliver),
        Err(Error::Truncated("Msg_Content"))
    ));
    // A report DELIVER whose content is not 60 octets.
    let bad_report = StatusReport::decode(&[0u8; 59]);
    assert!(bad_report.is_err());

    // Unknown commands are framed and passed through.
    let query = hex(&["0000000e", "00000006", "00000003", "abcd"]);
    assert_eq!(
        decode_one(&query).pdu,
        Pdu::Unknown {
            command_id: command::QUERY,
            body: vec![0xab, 0xcd]
        }
    );
}

#[test]
fn garbage_never_panics() {
    // A deterministic pseudo-random byte stream, fed in odd-sized chunks, with plausible
    // headers mixed in so bodies get decoded too.
    let mut x: u32 = 0x1234_5678;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        x
    };
    let commands = [
        1u32,
        2,
        4,
        5,
        8,
        0x8000_0001,
        0x8000_0004,
        0x8000_0005,
        0x8000_0008,
    ];
    for _ in 0..2000 {
        let len = 12 + (next() % 200) as usize;
        let mut pdu = Vec::with_capacity(len);
        pdu.extend((len as u32).to_be_bytes());
        pdu.extend(commands[(next() as usize) % commands.len()].to_be_bytes());
        pdu.extend(next().to_be_bytes());
        while pdu.len() < len {
            pdu.push(next() as u8);
        }
        let _ = decode_frame(&pdu);
        let mut dec = FrameDecoder::new();
        for chunk in pdu.chunks(7) {
            dec.extend(chunk);
            while let Ok(Some(_)) = dec.next_pdu() {}
        }
        let _ = split_udh(&pdu[12..]);
        let _ = StatusReport::decode(&pdu[12..]);
        let mut r = Reassembler::default();
        let _ = r.push("x", pdu[0], 1, &pdu[12..]);
        let _ = decode_text(8, &pdu);
        let _ = decode_text(15, &pdu);
    }
}

#[test]
fn oversized_fields_are_encode_errors() {
    let mut s = Submit {
        src_id: "1".repeat(22),
        ..Submit::default()
    };
    assert!(matches!(
        Frame::new(1, Pdu::Submit(s.clone())).encode(),
        Err(Error::FieldTooLong {
            field: "Src_Id",
            ..
        })
    ));
    s.src_id.clear();
    s.msg_content = vec![0; 256];
    assert!(matches!(
        Frame::new(1, Pdu::Submit(s)).encode(),
        Err(Error::FieldTooLong {
            field: "Msg_Content",
            ..
        })
    ));
}

#[test]
fn msg_id_layout() {
    let id = compose_msg_id(11, 28, 18, 30, 0, 0x12345, 7);
    assert_eq!(id >> 60, 11);
    assert_eq!((id >> 55) & 0x1f, 28);
    assert_eq!((id >> 16) & 0x3f_ffff, 0x12345);
    assert_eq!(id & 0xffff, 7);
}
